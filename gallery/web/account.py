"""The account page: a person's API tokens (list, create (the secret shown once), revoke)."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from gallery.accounts import tokens
from gallery.errors import NotAllowed
from gallery.models import ApiToken

TOKENS_NEED_A_SESSION = "API tokens are managed from a logged-in browser, not with a token."


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=ApiToken._meta.get_field("name").max_length,
        help_text="What uses it, e.g. 'backup script'.",
    )


@login_required
@require_http_methods(["GET", "POST"])
def account(request):
    if getattr(request, "api_token", None) is not None:
        raise NotAllowed(TOKENS_NEED_A_SESSION)
    form = TokenForm(request.POST or None)
    context = {"form": form, "new_token": None, "new_secret": None}
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                token, secret = tokens.create_api_token(
                    user=request.user, name=form.cleaned_data["name"]
                )
            except tokens.TokenError as error:
                form.add_error("name", str(error))
                status = 400
            else:
                context.update(form=TokenForm(), new_token=token, new_secret=secret)
                status = 201
        else:
            status = 400
    context["tokens"] = tokens.user_tokens(request.user)
    response = render(request, "gallery/account.html", context, status=status)
    response["Cache-Control"] = "no-store"  # the page may carry a new token's secret
    return response


@login_required
@require_POST
def revoke_token(request, pk: int):
    if getattr(request, "api_token", None) is not None:
        raise NotAllowed(TOKENS_NEED_A_SESSION)
    token = get_object_or_404(tokens.user_tokens(request.user), pk=pk)
    tokens.revoke_api_tokens(tokens=ApiToken.objects.filter(pk=token.pk))
    messages.success(request, f"Revoked the token {token.name!r} ({token.prefix}…).")
    return redirect("account")
