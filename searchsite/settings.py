"""Django settings, read once from environment variables with safe defaults (see README)."""

import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from searchsite.paths import PROJECT_DIR, SITE_FILES_DIR, data_dir

BASE_DIR = PROJECT_DIR


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use 1/0, true/false).")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    value = os.environ.get(name) or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of {', '.join(choices)}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_rate(name: str, default: str) -> str:
    """A rate such as 60/m (per s, m, h or d; 100/5m is 100 per 5 minutes); "" is no limit."""
    value = os.environ.get(name, default).strip()
    if value and not re.fullmatch(r"\d+/\d*[smhd]", value):
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a rate such as 60/m (or empty for no limit)."
        )
    return value


DEBUG = env_bool("DEBUG", False)

# A well-known key so that `DEBUG=1` works with no set-up; never accepted with DEBUG off.
DEVELOPMENT_SECRET_KEY = "django-insecure-visual-search-development-key-do-not-deploy"
SECRET_KEY = env_str("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is the built-in development key while DEBUG is off. Set SECRET_KEY to a "
        "long random value (python -c 'import secrets; print(secrets.token_urlsafe(50))'), or "
        "start the site with `visual-search up`, which creates one in the data directory."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

DATA_DIR = data_dir()
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or DATA_DIR / "media")
MEDIA_URL = "/media/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or DATA_DIR / "static")
STATIC_URL = "/static/"
STATICFILES_DIRS = [SITE_FILES_DIR / "static"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_rq",
    "axes",  # failed logins (README, "Limits")
    # The versioned API (/api/v1/); listed so its docs page serves Swagger UI from the
    # package's own static files instead of a CDN.
    "ninja",
    "csp",
    "gallery",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Outside the session middleware, so a login's session write counts as a write too.
    "gallery.replicas.ReadYourWritesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # API tokens (Authorization: Bearer) and SITE_ACCESS: who may see the library.
    "gallery.web.access.SiteAccessMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "gallery.web.middleware.ErrorResponseMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "searchsite.urls"
WSGI_APPLICATION = "searchsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [SITE_FILES_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL")
if not DATABASE_URL:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. Run the site through `visual-search` or `manage.py`, which "
        "start an embedded PostgreSQL when it is unset, or point DATABASE_URL at a "
        "PostgreSQL server with pgvector (postgres://user:password@host:5432/dbname)."
    )
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
# A database that does not answer is reported (a 503) after seconds, not after gunicorn's
# 120 s worker timeout; a connection kept between requests is checked before it is reused.
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = 3
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True


def replica_database(url: str) -> dict:
    """A read replica's DATABASES entry (README, "Read replicas"). No connection is kept
    between requests (CONN_MAX_AGE 0): every request connects, and libpq's connect_timeout
    covers the whole start-up, so a replica that stopped answering is found within 3 s and
    skipped, where a kept connection would hang on its first query. Tests mirror the primary's
    test database."""
    replica = dj_database_url.parse(url, conn_max_age=0)
    replica.setdefault("OPTIONS", {})["connect_timeout"] = 3
    replica["TEST"] = {"MIRROR": "default"}
    return replica


# Searches, gallery pages and the API's reads go to these (round robin), writes and the
# reads after a write to the primary (gallery/replicas.py).
DATABASE_REPLICAS = []
for _number, _url in enumerate(env_list("DATABASE_REPLICA_URLS", []), start=1):
    DATABASES[f"replica{_number}"] = replica_database(_url)
    DATABASE_REPLICAS.append(f"replica{_number}")
DATABASE_ROUTERS = ["gallery.replicas.ReplicaRouter"]
# A replica that failed is skipped this long (per process) before it is tried again.
DATABASE_REPLICA_RETRY_SECONDS = env_int("DATABASE_REPLICA_RETRY_SECONDS", 30)
# After a request that wrote, that browser reads from the primary this long (its own writes).
DATABASE_REPLICA_PIN_SECONDS = env_int("DATABASE_REPLICA_PIN_SECONDS", 10)

REDIS_URL = env_str("REDIS_URL")
if not REDIS_URL:
    raise ImproperlyConfigured(
        "REDIS_URL is not set. Run through `visual-search` or `manage.py`, which start an "
        "embedded Valkey server when it is unset, or set REDIS_URL=redis://host:6379/0."
    )
ENCODING_QUEUE = env_str("ENCODING_QUEUE", "default")
# Text inside images (OCR, gallery/indexing/ocr.py): read after an image is indexed, by a job
# on its own queue, so its slower model (several times the encoder's time per image) never
# delays a vector (README, "Text in images").
OCR_ENABLED = env_bool("OCR_ENABLED", True)
OCR_QUEUE = env_str("OCR_QUEUE", "ocr")
# Short timeouts keep an upload from hanging on a stalled or unreachable Redis (the image then
# stays pending for `requeue`). RQ workers raise the read timeout above their blocking wait
# for jobs by themselves (rq.Worker._set_connection).
QUEUE_URL = (
    REDIS_URL + ("&" if "?" in REDIS_URL else "?") + "socket_connect_timeout=0.5&socket_timeout=0.5"
)
RQ_QUEUES = {
    name: {"URL": QUEUE_URL, "DEFAULT_TIMEOUT": env_int("RQ_JOB_TIMEOUT", 600)}
    for name in {"default", ENCODING_QUEUE, OCR_QUEUE}
}
RQ_SHOW_ADMIN_LINK = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# django-axes first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
# private: every page, media file and API answer needs an account (a session or an API
# token); public: anyone may browse and search, uploading and changing need an account.
SITE_ACCESS = env_choice("SITE_ACCESS", ("private", "public"), "private")
LOGIN_REDIRECT_URL = "gallery"
LOGOUT_REDIRECT_URL = "gallery"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Local runs skip collectstatic; production images run it at build time.
WHITENOISE_USE_FINDERS = True

# --- The CLIP model (owned by gallery/indexing/encoder.py) ---
CLIP_MODEL = env_str("CLIP_MODEL", "ViT-B-32-256")
# A pretrained tag known to open_clip, or "random" for seeded random weights (tests, benchmarks).
CLIP_PRETRAINED = env_str("CLIP_PRETRAINED", "datacomp_s34b_b86k")
# A local checkpoint file; when set it wins over CLIP_PRETRAINED (for machines without internet).
CLIP_WEIGHTS_FILE = env_str("CLIP_WEIGHTS_FILE")
CLIP_DEVICE = env_str("CLIP_DEVICE", "auto")
CLIP_RANDOM_SEED = env_int("CLIP_RANDOM_SEED", 0)
CLIP_MODEL_CACHE_DIR = env_str("CLIP_MODEL_CACHE_DIR") or None
# auto: ONNX Runtime on the CPU, torch on an NVIDIA GPU; onnx or torch to insist on one.
CLIP_BACKEND = env_choice("CLIP_BACKEND", ("auto", "onnx", "torch"), "auto")
# ONNX Runtime's weights: int8 (dynamic quantization) or fp32. int8 is the default because
# on 2 cores it halves the web process's memory and is faster, with vectors at cosine
# >= 0.9998 to fp32's on probe inputs (see README, "Encoder backends").
CLIP_PRECISION = env_choice("CLIP_PRECISION", ("fp32", "int8"), "int8")
# Exported ONNX files, one folder per registered model.
MODEL_FILES_DIR = Path(env_str("MODEL_FILES_DIR") or DATA_DIR / "models")
# Switch to a newly configured model as soon as every image has its vector (otherwise with
# the admin or `manage.py activate_model`).
MODEL_AUTO_ACTIVATE = env_bool("MODEL_AUTO_ACTIVATE", True)
# How often a web process re-reads which model is active, so a switch needs no restart.
MODEL_REFRESH_SECONDS = env_int("MODEL_REFRESH_SECONDS", 5)
ENCODE_BATCH_SIZE = env_int("ENCODE_BATCH_SIZE", 32)
# Threads torch (and BLAS) may use in this process; 0 = torch's default, every core. Two web
# processes each using both of 2 cores fought each other (8 concurrent searches: 4.9/s);
# `up` gives each child its share of the cores.
ENCODER_THREADS = env_int("ENCODER_THREADS", 0)
# Load the active model's text encoder when a web process starts, not on the first search.
PRELOAD_TEXT_ENCODER = env_bool("PRELOAD_TEXT_ENCODER", True)

# --- Search (defaults chosen from bench_search; see README) ---
# Each model's HNSW index: what it stores (halfvec: half the memory of vector at the same
# recall) and its build parameters. Changing them affects new indexes; `rebuild_vector_index`
# rebuilds an existing one without stopping search.
SEARCH_INDEX_STORAGE = env_choice("SEARCH_INDEX_STORAGE", ("halfvec", "vector"), "halfvec")
SEARCH_INDEX_M = env_int("SEARCH_INDEX_M", 32)
SEARCH_INDEX_EF_CONSTRUCTION = env_int("SEARCH_INDEX_EF_CONSTRUCTION", 200)
# hnsw.ef_search; 0 = grow with the library (see gallery/indexing/registry.py ef_search_for).
SEARCH_EF_SEARCH = env_int("SEARCH_EF_SEARCH", 0)
SEARCH_MAX_SCAN_TUPLES = env_int("SEARCH_MAX_SCAN_TUPLES", 20000)
# Up to this many images an exact scan is perfect and still fast (~7 ms at 2,000 rows, 15 ms at
# 5,000, measured here), so the index is not used.
SEARCH_EXACT_MAX_ROWS = env_int("SEARCH_EXACT_MAX_ROWS", 2500)
SEARCH_PAGE_SIZE = env_int("SEARCH_PAGE_SIZE", 24)
SEARCH_MAX_PAGE_SIZE = 100
# Sorting by date without a minimum score orders this many best matches by when they were
# taken, and says so (with min_score every match is ordered; README "Paging").
SEARCH_DATE_SORT_POOL = env_int("SEARCH_DATE_SORT_POOL", 500)
# Hybrid search fuses the vector and the keyword rankings read this deep on every page, so its
# pages are slices of one fused ranking (at most twice this many results).
SEARCH_HYBRID_DEPTH = env_int("SEARCH_HYBRID_DEPTH", 200)
# Below these cosine similarities a best match is reported as "no confident match".
SEARCH_TEXT_CONFIDENCE = float(env_str("SEARCH_TEXT_CONFIDENCE", "0.2"))
SEARCH_IMAGE_CONFIDENCE = float(env_str("SEARCH_IMAGE_CONFIDENCE", "0.6"))
TEXT_VECTOR_CACHE_SIZE = env_int("TEXT_VECTOR_CACHE_SIZE", 2048)
# Near-duplicates (README, "Near-duplicates"; chosen with bench_duplicates): search results
# whose vectors are at this cosine similarity or more fold into one tile, and the staff page's
# candidate pairs start there; a pair is confirmed when the pHashes of the two thumbnails
# differ in at most NEAR_DUPLICATE_PHASH_DISTANCE of 64 bits.
NEAR_DUPLICATE_SIMILARITY = float(env_str("NEAR_DUPLICATE_SIMILARITY", "0.9"))
NEAR_DUPLICATE_PHASH_DISTANCE = env_int("NEAR_DUPLICATE_PHASH_DISTANCE", 12)
NEAR_DUPLICATE_NEIGHBOURS = env_int("NEAR_DUPLICATE_NEIGHBOURS", 10)
# Relevance feedback ("more like these / less like these", README): Rocchio's weights for the
# query, the mean of the images marked relevant and the mean of those marked not relevant.
FEEDBACK_ALPHA = float(env_str("FEEDBACK_ALPHA", "1.0"))
FEEDBACK_BETA = float(env_str("FEEDBACK_BETA", "0.75"))
FEEDBACK_GAMMA = float(env_str("FEEDBACK_GAMMA", "0.25"))

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "visual-search",
        "TIMEOUT": 7 * 24 * 3600,
        # The cache only saves work: give up quickly rather than stall a search (a failed
        # call also makes search skip the cache for a while; gallery/search/query_vectors.py).
        "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
    }
}

# --- Limits: one client cannot run a public site into the ground (README, "Limits") ---
# How deep paging goes: a page starting past this many results is refused (400).
SEARCH_MAX_RESULTS = env_int("SEARCH_MAX_RESULTS", 10_000)
# Per client (the user when logged in, else the address), counted in the Redis cache by
# django-ratelimit; "" turns a limit off. Query images are the expensive part (the image tower).
SEARCH_RATE_LIMIT = env_rate("SEARCH_RATE_LIMIT", "60/m")
QUERY_IMAGE_RATE_LIMIT = env_rate("QUERY_IMAGE_RATE_LIMIT", "10/m")
# Decided from the image's header, before it is decoded; uploads may have MAX_IMAGE_PIXELS.
QUERY_IMAGE_MAX_PIXELS = env_int("QUERY_IMAGE_MAX_PIXELS", 16_000_000)
# Reverse proxies in front of the site that append the address they saw to X-Forwarded-For.
# 0: the connection's own address is the client (the header, which anyone can send, is
# ignored); n: the n-th address from the right of X-Forwarded-For is (gallery/web/limits.py).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
RATELIMIT_IP_META_KEY = "gallery.web.limits.client_ip"

# HTTPS=true: the site is reached over HTTPS only (TLS ended by a proxy in front, or served
# directly): cookies are Secure, browsers are told HSTS, plain HTTP is redirected (except the
# health check, which container probes call over plain HTTP). Behind a proxy, the header it
# sets to say the request came over HTTPS: HTTPS_PROXY_HEADER, by default X-Forwarded-Proto
# when TRUSTED_PROXY_COUNT says there is a proxy; never trust it without one.
HTTPS = env_bool("HTTPS", False)
HTTPS_PROXY_HEADER = env_str(
    "HTTPS_PROXY_HEADER", "X-Forwarded-Proto" if TRUSTED_PROXY_COUNT > 0 else ""
)
if HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading is a registration of the domain in the browsers' lists, the owner's own
        # decision; its absence is not a misconfiguration.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    if HTTPS_PROXY_HEADER:
        header = "HTTP_" + HTTPS_PROXY_HEADER.upper().replace("-", "_")
        SECURE_PROXY_SSL_HEADER = (header, "https")

# Content-Security-Policy (django-csp): scripts, styles and images from the site itself only,
# no inline scripts anywhere (the pages' scripts are files in static/). django-rq's dashboard,
# a staff page from the package, has inline scripts of its own, so it is left without one.
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/admin/rq/"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        # data: for the API docs' icons (Swagger UI).
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
# The limiter's cache calls go through gallery.cache's breaker; a count it cannot read lets
# the request through rather than refusing everyone while Redis is away.
RATELIMIT_FAIL_OPEN = True
# Failed logins, per account and address together (django-axes, in the database): a guesser
# is stopped on that account from that address, while its owner, and everyone else, can still
# log in from their own.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)  # 0: no limit
LOGIN_COOLOFF_MINUTES = env_int("LOGIN_COOLOFF_MINUTES", 15)
if LOGIN_COOLOFF_MINUTES < 1:
    # django-axes reads no cool-off as "locked until an administrator unlocks".
    raise ImproperlyConfigured(f"LOGIN_COOLOFF_MINUTES={LOGIN_COOLOFF_MINUTES} must be 1 or more.")
AXES_ENABLED = LOGIN_FAILURE_LIMIT > 0
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "gallery.web.limits.client_ip"
AXES_LOCKOUT_CALLABLE = "gallery.web.limits.login_locked_out"

# --- Uploads ---
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 25 * 1024 * 1024)
MAX_IMAGE_PIXELS = env_int("MAX_IMAGE_PIXELS", 90_000_000)
THUMBNAIL_SIZE = env_int("THUMBNAIL_SIZE", 320)
# Shortest side of the preview kept at ingest, which workers encode instead of the original
# (a 12 MP JPEG is not decoded a second time). Twice the default model's 256 px input; a
# model with a larger input gets larger previews, made lazily by the worker.
PREVIEW_SIZE = env_int("PREVIEW_SIZE", 512)
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("MAX_UPLOAD_FILES", 500)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "gallery.web.uploads.SizeLimitUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # open_clip logs its every step to the root logger at INFO.
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        name: {"level": env_str("LOG_LEVEL", "INFO")} for name in ("gallery", "searchsite", "rq")
    },
}
