from django.urls import path

from gallery.web import views

urlpatterns = [
    path("", views.gallery, name="gallery"),
    path("search/", views.search_page, name="search"),
    path("images/<int:pk>/", views.image_detail, name="image_detail"),
    path("upload/", views.upload, name="upload"),
    path("api/search", views.api_search, name="api_search"),
    path("healthz", views.healthz, name="healthz"),
]
