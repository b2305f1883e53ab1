from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from gallery.web.api_v1 import api as api_v1
from gallery.web.views import serve_media

urlpatterns = [
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    re_path(r"^media/(?P<path>.*)$", serve_media, name="media"),
    path("api/v1/", api_v1.urls),
    path("", include("gallery.web.urls")),
]
