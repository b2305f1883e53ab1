from django.urls import path

from gallery import views

urlpatterns = [
    path("", views.gallery, name="gallery"),
    path("upload/", views.upload, name="upload"),
    path("healthz", views.healthz, name="healthz"),
]
