"""Test settings: real PostgreSQL + pgvector and Valkey, started once per test session.

Without DATABASE_URL / REDIS_URL, embedded servers run in a throwaway folder that is removed
afterwards; the user's own data directory is never touched. The CLIP model is a tiny open_clip
configuration with seeded random weights, and the Hugging Face hub is offline.
"""

import atexit
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["CLIP_MODEL"] = "vs-test-tiny"
os.environ["CLIP_PRETRAINED"] = "random"
os.environ.pop("CLIP_WEIGHTS_FILE", None)
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("ENCODE_BATCH_SIZE", "8")
# Every test client is 127.0.0.1, so per-client rate limits would count the whole session (and
# the sites `up` tests start); tests/test_limits.py turns them on where it tests them.
os.environ["SEARCH_RATE_LIMIT"] = ""
os.environ["QUERY_IMAGE_RATE_LIMIT"] = ""
# The test model's random weights put every image at cosine ~0.99 to every other, and
# tests/images.py's images are one pattern in many colours (identical pHashes): search pages
# would fold them as near-duplicates. Folding is off (no cosine reaches 1.01) except where
# tests/test_duplicates.py turns it on with photo-like images.
os.environ["NEAR_DUPLICATE_SIMILARITY"] = "1.01"

TEST_DATA_DIR = tempfile.mkdtemp(prefix="visual-search-test-")
atexit.register(shutil.rmtree, TEST_DATA_DIR, ignore_errors=True)
os.environ["VISUAL_SEARCH_DATA_DIR"] = TEST_DATA_DIR

from searchsite.embedded import prepare_environment  # noqa: E402

prepare_environment(ephemeral=True)

from searchsite.settings import *  # noqa: E402, F403
