"""What the workers actually do: plain functions, one per effect, called by tasks.py.

Each is safe to run again: it re-reads its objects by id and recomputes rather than increments.
When what it is about has gone (a user deleted before the email was sent) it raises ``Skip``
with the reason, and the effect ends as ``skipped``, never ``done``. An email is composed here
and returned; the task sends it. A follow-up effect (the new sign-in email, the
failed-login alert) is decided here and offloaded by the task.
"""

import logging
import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.core.mail import EmailMultiAlternatives
from django.db.models import Count, Sum
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from offload import Skip

from .models import Document, FailedLogin, LoginActivity, Profile

logger = logging.getLogger(__name__)
User = get_user_model()


def email(template: str, subject: str, to: str, context: dict) -> EmailMultiAlternatives:
    """``notifications/email/<template>.txt`` with its ``.html`` twin as the alternative."""
    context = {"site_url": settings.SITE_URL, **context}
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"notifications/email/{template}.txt", context),
        to=[to],
    )
    message.attach_alternative(
        render_to_string(f"notifications/email/{template}.html", context), "text/html"
    )
    return message


def timestamp(value: str):
    """An ISO 8601 time from the ledger; anything else is a permanent error (ValueError)."""
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None:
        raise ValueError(f"not an ISO 8601 time: {value!r:.40}")
    return parsed


def welcome_email(user_id: int) -> EmailMultiAlternatives:
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise Skip("the account was closed or deactivated before the email was sent")
    if not user.email:
        raise Skip("the account has no email address")
    return email("welcome", "Welcome aboard", user.email, {"user": user})


def record_login(
    user_id: int, ip: str | None, user_agent: str, at: str, sign_in: str = ""
) -> LoginActivity:
    """Store the sign-in and refresh the login counters. The record says ``new_device`` when the
    IP address or the browser was never seen for this user before (not for a first sign-in):
    then the user gets a "new sign-in" email."""
    if not User.objects.filter(pk=user_id).exists():
        raise Skip("the account was closed before the sign-in was recorded")
    # Lock the profile row: two sign-ins of one user are recorded one after the other, so the
    # new-device check and the counters see each other.
    Profile.objects.select_for_update().get_or_create(user_id=user_id)
    earlier = LoginActivity.objects.filter(user_id=user_id)
    new_device = earlier.exists() and (
        not earlier.filter(ip=ip).exists() or not earlier.filter(user_agent=user_agent).exists()
    )
    login = LoginActivity.objects.create(
        user_id=user_id,
        at=timestamp(at),
        ip=ip,
        user_agent=user_agent,
        new_device=new_device,
        sign_in=sign_in,
    )
    latest = LoginActivity.objects.filter(user_id=user_id).order_by("-at", "-pk").first()
    Profile.objects.filter(user_id=user_id).update(
        login_count=LoginActivity.objects.filter(user_id=user_id).count(),
        last_login_at=latest.at,
        last_login_ip=latest.ip,
    )
    return login


class SignInNotRecordedYet(Exception):
    """A sign-out came before the worker recorded its sign-in: another attempt will find it."""


def record_logout(user_id: int, sign_in: str, at: str) -> LoginActivity:
    """Give the session's sign-in record its end time (a repeat keeps the first)."""
    if not User.objects.filter(pk=user_id).exists():
        raise Skip("the account was closed with its sign-in records")
    login = LoginActivity.objects.filter(user_id=user_id, sign_in=sign_in).first()
    if login is None:
        # Both effects were recorded in order, but two workers may run them in either order.
        raise SignInNotRecordedYet(f"no sign-in record {sign_in:.8}... yet")
    if login.ended_at is None:
        login.ended_at = timestamp(at)
        login.save(update_fields=["ended_at"])
    return login


def new_sign_in_email(login_id: int) -> EmailMultiAlternatives:
    login = LoginActivity.objects.select_related("user").filter(pk=login_id).first()
    if login is None:
        raise Skip("the account was closed before the email was sent")
    if not login.user.email:
        raise Skip("the account has no email address")
    return email("new_sign_in", "New sign-in to your account", login.user.email, {"login": login})


def email_change_notice(username: str, old_email: str, new_email: str) -> EmailMultiAlternatives:
    """To the address the account had: the only place an owner whose account was taken over
    would hear of it. It needs no row, so it is sent even when the address has changed again
    since, or the account was closed meanwhile."""
    context = {"username": username, "new_email": new_email}
    return email("email_changed", "Your email address was changed", old_email, context)


def email_change_confirmation(user_id: int, address: str) -> EmailMultiAlternatives:
    """To the new address, while it is still the account's (a later change supersedes it)."""
    user = User.objects.filter(pk=user_id, email=address).first()
    if user is None:
        raise Skip("the address changed again, or the account was closed, first")
    return email("email_confirmed", "This is now your address", address, {"user": user})


def password_reset_email(user_id: int) -> EmailMultiAlternatives:
    """The link to set a new password. Its token is made here, in the worker, and only ever
    written into the email: never into the ledger, a message or a log line."""
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise Skip("the account was closed or deactivated before the email was sent")
    if not user.email:
        raise Skip("the account has no email address")
    path = reverse(
        "password_reset_confirm",
        kwargs={
            "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": default_token_generator.make_token(user),
        },
    )
    context = {"user": user, "link": settings.SITE_URL + path}
    return email("password_reset", "Set a new password", user.email, context)


def account_closed_email(address: str, username: str) -> EmailMultiAlternatives:
    """The account is gone: everything the email says comes from what the receiver captured."""
    return email("account_closed", "Your account was closed", address, {"username": username})


def record_failed_login(
    username_hash: str, ip: str | None, at: str, user_id: int | None
) -> FailedLogin:
    """Store the failure. Once ``FAILED_LOGIN_ALERT_THRESHOLD`` failures for an existing account
    fall inside ``FAILED_LOGIN_WINDOW``, the failure that crossed it is marked ``alerted``: the
    account owner gets one alert email for that window."""
    if user_id is not None and not User.objects.filter(pk=user_id).exists():
        user_id = None
    if user_id is not None:
        Profile.objects.select_for_update().get_or_create(user_id=user_id)
    failure = FailedLogin.objects.create(
        username_hash=username_hash, ip=ip, at=timestamp(at), user_id=user_id
    )
    if user_id is None:
        return failure
    recent = FailedLogin.objects.filter(
        user_id=user_id, at__gte=timezone.now() - settings.FAILED_LOGIN_WINDOW
    )
    if (
        recent.count() >= settings.FAILED_LOGIN_ALERT_THRESHOLD
        and not recent.filter(alerted=True).exists()
    ):
        failure.alerted = True
        failure.save(update_fields=["alerted"])
    return failure


def failed_login_alert(failed_login_id: int) -> EmailMultiAlternatives:
    failure = FailedLogin.objects.select_related("user").filter(pk=failed_login_id).first()
    if failure is None or failure.user is None:
        raise Skip("the account was closed before the alert was sent")
    if not failure.user.email:
        raise Skip("the account has no email address")
    window = settings.FAILED_LOGIN_WINDOW
    recent = FailedLogin.objects.filter(user=failure.user, at__gte=failure.at - window)
    return email(
        "failed_login_alert",
        "Failed sign-in attempts on your account",
        failure.user.email,
        {
            "user": failure.user,
            "count": recent.count(),
            "window_minutes": int(window.total_seconds() // 60),
            "last_ip": failure.ip,
        },
    )


def delete_stored_file(name: str) -> None:
    """Delete a stored file unless a document still refers to it.

    ``name`` always comes from a database row, never from a request; the storage refuses names
    that resolve outside MEDIA_ROOT (SuspiciousFileOperation, a permanent failure).
    """
    if not name or not isinstance(name, str):
        raise ValueError("a stored file name is required")
    if Document.objects.filter(file=name).exists():
        logger.info("kept %s: another document still refers to it", name)
        return
    # The storage's own check is by path only: a symlinked directory inside MEDIA_ROOT would
    # lead outside it. The real path must stay inside the real MEDIA_ROOT.
    root = os.path.realpath(settings.MEDIA_ROOT)
    if os.path.commonpath([root, os.path.realpath(default_storage.path(name))]) != root:
        raise SuspiciousFileOperation(f"{name!r} resolves outside MEDIA_ROOT")
    default_storage.delete(name)


def refresh_profile_counters(user_id: int) -> None:
    """Recount the owner's documents and stored bytes from the documents themselves."""
    if not User.objects.filter(pk=user_id).exists():
        raise Skip("the account was closed before the recount")
    totals = Document.objects.filter(owner_id=user_id).aggregate(
        count=Count("pk"), size=Sum("size")
    )
    Profile.objects.update_or_create(
        user_id=user_id,
        defaults={"document_count": totals["count"], "storage_bytes": totals["size"] or 0},
    )


def share_email(document_id: int, recipient: str, shared_by_id: int) -> EmailMultiAlternatives:
    document = Document.objects.filter(pk=document_id).first()
    sharer = User.objects.filter(pk=shared_by_id).first()
    if document is None:
        raise Skip("the document was deleted before the email was sent")
    if sharer is None:
        raise Skip("the sharer's account was closed before the email was sent")
    # The link's signed token is made here, in the worker: never in the ledger or a message.
    link = settings.SITE_URL + reverse("shared_download", args=[document.share_token()])
    return email(
        "document_shared",
        f"{sharer.get_username()} shared “{document.title}” with you",
        recipient,
        {"document": document, "sharer": sharer, "link": link},
    )
