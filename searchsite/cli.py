"""The `visual-search` command: Django's manage.py with embedded servers started on demand."""

import os
import sys


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
    from searchsite.embedded import prepare_environment

    prepare_environment()
    from django.core.management import execute_from_command_line

    execute_from_command_line(argv if argv is not None else sys.argv)


if __name__ == "__main__":
    main()
