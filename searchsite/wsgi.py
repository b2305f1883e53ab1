"""WSGI entry point for gunicorn. Expects DATABASE_URL and REDIS_URL (set by `up` or compose)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")

application = get_wsgi_application()
