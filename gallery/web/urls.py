from django.urls import path

from gallery.web import account, duplicates, health, views

urlpatterns = [
    path("", views.gallery, name="gallery"),
    path("search/", views.search_page, name="search"),
    path("images/<int:pk>/", views.image_detail, name="image_detail"),
    path("images/<int:pk>/edit/", views.image_edit, name="image_edit"),
    path("images/<int:pk>/delete/", views.image_delete, name="image_delete"),
    path("images/<int:pk>/retry/", views.image_retry, name="image_retry"),
    path("images/selection/", views.gallery_selection, name="gallery_selection"),
    path("upload/", views.upload, name="upload"),
    path("duplicates/", duplicates.duplicates_page, name="duplicates"),
    path("duplicates/keep/", duplicates.duplicates_keep, name="duplicates_keep"),
    path("duplicates/scan/", duplicates.duplicates_scan, name="duplicates_scan"),
    path("healthz", health.healthz, name="healthz"),
    path("account/", account.account, name="account"),
    path("account/tokens/<int:pk>/revoke/", account.revoke_token, name="revoke_token"),
]
