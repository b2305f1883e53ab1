"""Liveness of the services the site depends on: /healthz, always JSON (read by `up`,
container healthchecks and load balancers)."""

import os

import django_rq
from django.db import connection
from django.http import JsonResponse

from gallery.indexing.encoder import loaded_encoders, torch_imported
from gallery.indexing.progress import model_health


def check_services() -> dict:
    report = {"database": False, "queue": False}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            report["database"] = cursor.fetchone() is not None
    except Exception as error:  # report, never raise: this is a health endpoint
        report["database_error"] = str(error)
    try:
        report["queue"] = bool(django_rq.get_connection("default").ping())
    except Exception as error:
        report["queue_error"] = str(error)
    if report["database"]:
        # Weights that cannot be loaded stop indexing, not the site: reported, not fatal.
        try:
            report["models"] = model_health()
        except Exception as error:  # the database went away between the two queries
            report["database"] = False
            report["database_error"] = str(error)
    report["this_process"] = {
        "pid": os.getpid(),
        "encoders": loaded_encoders(),
        # With ONNX Runtime a web process never needs torch (about 500 MB resident).
        "torch_imported": torch_imported(),
    }
    report["ok"] = report["database"] and report["queue"]
    return report


def healthz(request):
    report = check_services()
    return JsonResponse(report, status=200 if report["ok"] else 503)
