"""The staff page of near-duplicates: the last scan's groups (the scan runs as a job), "Scan
again", and "keep this one, delete the others" for each group."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from gallery.errors import NotAllowed
from gallery.library import duplicates, lifecycle
from gallery.web.forms import DuplicateKeepForm


def _staff_only(request) -> None:
    if not (request.user.is_staff or request.user.is_superuser):
        raise NotAllowed("Only staff may review near-duplicates.")


@login_required
def duplicates_page(request):
    _staff_only(request)
    context = {
        "scan": duplicates.last_duplicate_scan(),
        "scanning": duplicates.duplicate_scan_running(),
    }
    return render(request, "gallery/duplicates.html", context)


@login_required
@require_POST
def duplicates_scan(request):
    _staff_only(request)
    if duplicates.request_duplicate_scan():
        messages.success(request, "Scan queued: this page shows its groups when it is done.")
    else:
        messages.error(request, "The job queue cannot be reached: no scan was queued.")
    return redirect("duplicates")


@login_required
@require_POST
def duplicates_keep(request):
    _staff_only(request)
    form = DuplicateKeepForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(e for errors in form.errors.values() for e in errors))
        return redirect("duplicates")
    try:
        count = duplicates.keep_one_delete_others(
            keep=form.cleaned_data["keep"], others=form.cleaned_data["images"], by=request.user
        )
    except lifecycle.LibraryError as error:
        messages.error(request, str(error))
    else:
        kept = form.cleaned_data["keep"]
        messages.success(
            request, f"Kept image {kept}; deleted {count} other{'s' if count != 1 else ''}."
        )
    return redirect("duplicates")
