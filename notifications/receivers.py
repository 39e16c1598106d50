"""Signal receivers. Each reads ids off the signal, makes a cheap check, and hands the work to
its task with ``task.offload(...)``: recorded in this transaction, run by a worker after the
commit. No email, no storage call, no recount happens here. Wired in apps.py."""

from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.crypto import salted_hmac

from . import tasks
from .security import client_ip

User = get_user_model()


def welcome_new_user(sender, instance, created, raw=False, **kwargs):
    if created and not raw:
        tasks.send_welcome_email.offload(user_id=instance.pk)


def record_login(sender, request, user, **kwargs):
    tasks.record_login.offload(
        user_id=user.pk,
        ip=client_ip(request),
        user_agent=request.headers.get("User-Agent", "")[:300] if request else "",
        at=timezone.now().isoformat(),
    )


def record_failed_login(sender, credentials, request=None, **kwargs):
    # Django has already masked the password in `credentials`; we keep only a keyed hash of
    # the username, so the records can be grouped per account without storing what was typed.
    username = str(credentials.get("username", ""))
    user_id = account_id(username)
    tasks.record_failed_login.offload(
        username_hash=salted_hmac(
            "failed-login", username.casefold(), algorithm="sha256"
        ).hexdigest(),
        ip=client_ip(request),
        at=timezone.now().isoformat(),
        user_id=user_id,
    )


def delete_replaced_file(sender, instance, created, raw=False, **kwargs):
    old = instance.stored_file_name
    if not created and not raw and old and old != instance.file.name:
        tasks.delete_stored_file.offload(name=old, owner_id=instance.owner_id)


def delete_removed_file(sender, instance, **kwargs):
    if instance.stored_file_name:
        tasks.delete_stored_file.offload(name=instance.stored_file_name, owner_id=instance.owner_id)


def refresh_owner_counters(sender, instance, raw=False, **kwargs):
    if not raw:
        tasks.refresh_profile_counters.offload(user_id=instance.owner_id)


def notify_share_recipient(sender, document, recipient, shared_by, **kwargs):
    tasks.send_share_email.offload(
        document_id=document.pk,
        recipient=recipient,
        shared_by_id=shared_by.pk,
    )


def account_id(username: str) -> int | None:
    """The id of the account a failed sign-in was aimed at (one indexed lookup), so that the
    worker can alert its owner."""
    lookup = {User.USERNAME_FIELD: username}
    return User.objects.filter(**lookup).values_list("pk", flat=True).first()
