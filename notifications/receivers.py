"""Signal receivers. Each reads ids off the signal, makes a cheap check, and hands the work to
its task with ``task.enqueue(...)`` (Django's Tasks API) or ``task.offload(...)`` (a Celery
task): recorded in this transaction, run by a worker after the commit. No email, no storage
call, no recount happens here.

Wired with ``connect()`` in apps.py, all in one place; the one receiver of two signals says so
with ``@receiver`` (refresh_owner_counters, below).
"""

from uuid import uuid4

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from django.utils.crypto import salted_hmac

from . import tasks
from .models import Document
from .security import client_ip

User = get_user_model()

# Where a session keeps the id of its sign-in record, for the sign-out to find it.
SIGN_IN_SESSION_KEY = "sign_in"


def welcome_new_user(sender, instance, created, raw=False, **kwargs):
    if created and not raw:
        tasks.send_welcome_email.enqueue(user_id=instance.pk)


def notify_email_change(sender, instance, raw=False, update_fields=None, **kwargs):
    """pre_save: the address the row holds now, before this save replaces it. Only the stored
    row says what the old address was; the request only says what the new one is."""
    saves_email = update_fields is None or "email" in update_fields  # not on a sign-in's save
    if raw or instance._state.adding or not saves_email:
        return
    old = sender.objects.filter(pk=instance.pk).values_list("email", flat=True).first()
    if old is None or old == instance.email:
        return
    if old:
        tasks.send_email_change_notice.offload(
            user_id=instance.pk,
            username=instance.get_username(),
            old_email=old,
            new_email=instance.email,
        )
    if instance.email:
        tasks.send_email_change_confirmation.offload(user_id=instance.pk, email=instance.email)


def say_goodbye(sender, instance, **kwargs):
    """pre_delete: the last moment the account's address and its files' names can be read. The
    effects carry them, since the rows are gone by the time a worker runs."""
    if instance.email:
        tasks.send_account_closed_email.offload(
            email=instance.email, username=instance.get_username()
        )
    files = Document.objects.filter(owner=instance).exclude(file="").order_by("file")
    for name in files.values_list("file", flat=True).distinct():
        tasks.delete_stored_file.offload(name=name, owner_id=None)


def record_login(sender, request, user, **kwargs):
    sign_in = uuid4().hex
    if (session := getattr(request, "session", None)) is not None:
        session[SIGN_IN_SESSION_KEY] = sign_in
    tasks.record_login.offload(
        user_id=user.pk,
        ip=client_ip(request),
        user_agent=request.headers.get("User-Agent", "")[:300] if request else "",
        at=timezone.now().isoformat(),
        sign_in=sign_in,
    )


def record_logout(sender, request, user, **kwargs):
    # Sent before the session is flushed, so it still knows its sign-in.
    session = getattr(request, "session", None)
    sign_in = session.get(SIGN_IN_SESSION_KEY) if session is not None else None
    if user is not None and sign_in:
        tasks.record_logout.enqueue(user_id=user.pk, sign_in=sign_in, at=timezone.now().isoformat())


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


def delete_removed_file(sender, instance, origin=None, **kwargs):
    if instance.stored_file_name and not closing_account(origin):
        tasks.delete_stored_file.offload(name=instance.stored_file_name, owner_id=instance.owner_id)


@receiver([post_save, post_delete], sender=Document, dispatch_uid="refresh_owner_counters")
def refresh_owner_counters(sender, instance, raw=False, origin=None, **kwargs):
    if not raw and not closing_account(origin):
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


def closing_account(origin) -> bool:
    """Whether a deletion started at a user (``origin``, sent with post_delete): their documents
    go with them, and say_goodbye has already offloaded the files' removal, once per file.
    It must: by post_delete, Django has unlinked the user's effects (SET_NULL), and an effect
    naming the user recorded then would fail the deletion's commit on its foreign key."""
    model = origin.model if isinstance(origin, QuerySet) else type(origin)
    return issubclass(model, User)
