from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from gallery.accounts import tokens


class Command(BaseCommand):
    help = (
        "Create an API token for a user and print it once (only its hash is stored). Scripts "
        "send it as `Authorization: Bearer <token>`."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--name", default="command line", help="what the token is for (shown in lists)"
        )

    def handle(self, *args, username, name, **options):
        User = get_user_model()
        user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"There is no user {username!r} (createsuperuser makes one).")
        try:
            token, secret = tokens.create_api_token(user=user, name=name)
        except tokens.TokenError as error:
            raise CommandError(str(error)) from None
        self.stderr.write(
            f"Created API token {token.name!r} ({token.prefix}…) for {username}. "
            "Copy it now: it is not shown again."
        )
        self.stdout.write(secret)
