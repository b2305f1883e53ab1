"""API tokens: creating, revoking and recognising the secrets scripts send as
`Authorization: Bearer <token>`. Only a token's SHA-256 is stored; the secret is shown once.
"""

import hashlib
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from gallery.errors import InvalidInput
from gallery.models import ApiToken

# Tokens say what they are (secret scanners and people recognise them by it).
TOKEN_PREFIX = "vs_"
# The part of a secret kept in clear, so a person can tell their tokens apart in lists.
DISPLAY_CHARACTERS = 10
# last_used_at is written at most this often per token: not one UPDATE per API request.
LAST_USED_PRECISION = timedelta(minutes=1)


class TokenError(InvalidInput):
    """A token that cannot be created or changed; the message says why."""


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def create_api_token(*, user, name: str) -> tuple[ApiToken, str]:
    """A new token for `user`; returns the row and the secret, which is never stored."""
    name = " ".join((name or "").split())
    if not name:
        raise TokenError("Give the token a name (what uses it, e.g. 'backup script').")
    max_length = ApiToken._meta.get_field("name").max_length
    if len(name) > max_length:
        raise TokenError(f"A token's name can be at most {max_length} characters.")
    if not user.is_active:
        raise TokenError(f"{user.get_username()} is inactive: a token would not work.")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        token_hash=hash_token(secret),
        prefix=secret[:DISPLAY_CHARACTERS],
    )
    return token, secret


def revoke_api_tokens(*, tokens) -> int:
    """Revoke tokens (a queryset); already revoked ones keep their date. Returns how many."""
    return tokens.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


def user_tokens(user):
    """A person's tokens, newest first, revoked ones included (they say when)."""
    return ApiToken.objects.filter(user=user)


def token_for_secret(secret: str) -> ApiToken | None:
    """The live token with this secret (its user active), or None; notes when it was used."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=hash_token(secret), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
