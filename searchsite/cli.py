"""The `visual-search` command: Django's manage.py with embedded servers started on demand.

Commands that use the library bring an embedded database's schema up to date first, so a
fresh data directory works with any command, not only after `up`.
"""

import os
import sys

# Commands that manage the schema themselves or need no database.
SCHEMA_FREE_COMMANDS = {
    "backup",  # copies the schema as it is
    "check",
    "collectstatic",
    "help",
    "makemigrations",
    "migrate",
    "restore",  # needs the database empty; migrates after restoring
    "showmigrations",
    "sqlmigrate",
    "squashmigrations",
    "up",
    "version",
}


def main(argv: list[str] | None = None) -> None:
    argv = argv if argv is not None else sys.argv
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
    from searchsite.embedded import become_subreaper, prepare_environment

    command = argv[1] if len(argv) > 1 else "help"
    if command == "up" and sys.platform.startswith("linux"):
        become_subreaper()  # before the embedded PostgreSQL starts: `up` supervises it
    services = prepare_environment()
    if command not in SCHEMA_FREE_COMMANDS and not command.startswith("-"):
        _ensure_schema(embedded=services is not None and services.postgres is not None)
    from django.core.management import execute_from_command_line

    execute_from_command_line(argv)


def _ensure_schema(*, embedded: bool) -> None:
    import django
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    django.setup()
    executor = MigrationExecutor(connection)
    if not executor.migration_plan(executor.loader.graph.leaf_nodes()):
        return
    if not embedded:
        sys.exit(
            "The database at DATABASE_URL is not up to date: run `visual-search migrate` first."
        )
    print("Bringing the database schema up to date (visual-search migrate)...", file=sys.stderr)
    call_command("migrate", interactive=False, verbosity=0)
