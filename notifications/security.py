"""Who is asking, and what a locked-out client gets back.

Sign-in lockout is decided synchronously by django-axes (settings: AXES_*), before any password
is checked; only the record of the failure and the alert email are offloaded.
"""

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.http import JsonResponse
from django.shortcuts import render

from . import services


def client_ip(request) -> str | None:
    """The client's address. X-Forwarded-For is believed only as far as TRUSTED_PROXY_COUNT
    proxies of ours appended to it; with none configured, a client cannot pick its address."""
    if request is None:
        return None
    proxies = settings.TRUSTED_PROXY_COUNT
    header = request.headers.get("X-Forwarded-For", "")
    forwarded = [address.strip() for address in header.split(",") if address.strip()]
    if proxies and len(forwarded) >= proxies:
        return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR") or None


def lockout_response(request, original_response=None, credentials=None):
    """429 for a locked-out sign-in."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    message = f"Too many failed sign-ins. Try again in {minutes} minutes."
    return refusal(request, message, "notifications/locked_out.html")


def refusal(request, message: str, template: str, status: int = 429):
    """A refusal: JSON for the API ({"detail", "errors"}), a page for people."""
    if request.path_info.startswith("/api/"):
        return JsonResponse({"detail": message, "errors": {}}, status=status)
    return render(request, template, {"message": message}, status=status)


def password_confirmed(request, password: str) -> bool:
    """Whether ``password`` is the signed-in user's, checked as a sign-in is: a wrong one is a
    failed sign-in (recorded, and counted by django-axes), and a locked-out client is refused
    whatever it sends (then ``request.axes_locked_out`` is true)."""
    user = authenticate(request, username=request.user.get_username(), password=password)
    return user is not None and user.pk == request.user.pk


WRONG_PASSWORD_TO_CLOSE = "Wrong password: the account was not closed."


def close_own_account(request, password: str) -> bool:
    """Close the signed-in user's account once ``password`` is confirmed as theirs, and end
    its session. False when it was not (``request.axes_locked_out`` says if the client is
    locked out), and nothing is deleted.

    The session is flushed, not logout(): its user_logged_out would record a sign-out for a
    sign-in record that the deletion has just removed. An account that another request (a
    double submit) has just closed is closed: its password is not checked against nobody.
    """
    if not get_user_model().objects.filter(pk=request.user.pk).exists():
        request.session.flush()
        return True
    if not password_confirmed(request, password):
        return False
    services.close_account(request.user)
    request.session.flush()
    return True
