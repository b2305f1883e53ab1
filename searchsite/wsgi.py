"""WSGI entry point for gunicorn. Expects DATABASE_URL and REDIS_URL (set by `up` or compose)."""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")

application = get_wsgi_application()

# Each gunicorn worker imports this module after forking: load the text encoder before the
# worker takes requests, so the first search does not wait seconds for it.
if settings.PRELOAD_TEXT_ENCODER:
    from gallery.search.query_vectors import preload_text_encoder

    preload_text_encoder()
