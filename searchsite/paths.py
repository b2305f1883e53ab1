"""Where Visual Search keeps its data; shared by settings and the pre-Django bootstrap."""

import os
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Templates and static files: links to the checkout's top-level folders, copies in a wheel.
SITE_FILES_DIR = Path(__file__).resolve().parent


def data_dir() -> Path:
    """The one folder holding the database, the queue's state and the media files.

    ./data in a checkout; an installed wheel (no checkout) uses ./data of the current folder
    rather than a folder inside site-packages.
    """
    checkout = (PROJECT_DIR / "manage.py").is_file()
    default = PROJECT_DIR / "data" if checkout else Path.cwd() / "data"
    return Path(os.environ.get("VISUAL_SEARCH_DATA_DIR") or default).resolve()
