from django.urls import path

from gallery import views

urlpatterns = [
    path("", views.gallery, name="gallery"),
    path("healthz", views.healthz, name="healthz"),
]
