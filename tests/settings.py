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

TEST_DATA_DIR = tempfile.mkdtemp(prefix="visual-search-test-")
atexit.register(shutil.rmtree, TEST_DATA_DIR, ignore_errors=True)
os.environ["VISUAL_SEARCH_DATA_DIR"] = TEST_DATA_DIR

from searchsite.embedded import prepare_environment  # noqa: E402

prepare_environment(ephemeral=True)

from searchsite.settings import *  # noqa: E402, F403
