from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from gallery.web.api import api, first_search_view
from gallery.web.views import serve_media

urlpatterns = [
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    re_path(r"^media/(?P<path>.*)$", serve_media, name="media"),
    path("api/v1/", api.urls),
    # The first search address, from before versions: the same operations as /api/v1/search.
    path("api/search", first_search_view(), name="api_search"),
    path("", include("gallery.web.urls")),
]

handler400 = "gallery.web.responses.bad_request"
handler403 = "gallery.web.responses.permission_denied"
handler404 = "gallery.web.responses.not_found"
handler500 = "gallery.web.responses.server_error"
