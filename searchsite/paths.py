"""Where Visual Search keeps its data; shared by settings and the pre-Django bootstrap."""

import os
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The one folder holding the database, the queue's state and the media files."""
    return Path(os.environ.get("VISUAL_SEARCH_DATA_DIR") or PROJECT_DIR / "data").resolve()
