from django.core.management.base import BaseCommand

from searchsite.supervisor import DEFAULT_WEB_WORKERS, DEFAULT_WORKERS, run_site


class Command(BaseCommand):
    help = (
        "Run the whole site: embedded PostgreSQL and Valkey (unless DATABASE_URL/REDIS_URL are "
        "set), migrations, RQ encoding workers, an OCR worker (unless OCR_ENABLED=0) and "
        "gunicorn. Ctrl-C or SIGTERM stops everything."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--workers", type=int, default=DEFAULT_WORKERS, help="RQ encoding workers"
        )
        parser.add_argument(
            "--web-workers", type=int, default=DEFAULT_WEB_WORKERS, help="gunicorn processes"
        )

    def handle(self, *args, **options):
        code = run_site(
            host=options["host"],
            port=options["port"],
            workers=options["workers"],
            web_workers=options["web_workers"],
            out=self.stdout,
        )
        if code:
            raise SystemExit(code)
