"""The tasks, one per effect; Celery's autodiscovery finds them here.

Each is a thin shell: the ledger row is claimed and the arguments stored there are passed; the
work is a plain function in effects.py; the task performs what cannot be undone (sending an
email) and offloads any follow-up effect. Queues (CELERY_TASK_ROUTES and queue_name):
`emails` (SMTP can be slow), `files` (storage), `records` (database only).

Two kinds, one ledger: Django's own ``@task`` (django.tasks, run by offload's backend: TASKS in
settings) and Celery's ``@shared_task(base=EffectTask)``. Both are recorded in the caller's
transaction and run once by a worker; ``.enqueue()`` is Django's standard way to ask, and
``.offload()`` the Celery task's.

The names are part of the ledger: an effect row names its task (a django.tasks task by its
module path), so renaming one strands them.
"""

from celery import shared_task
from django.tasks import task

from offload import EffectTask
from offload.mail import send

from . import effects


@task(queue_name="emails", user_arg="user_id", description="Welcome email")
def send_welcome_email(user_id: int) -> None:
    send(effects.welcome_email(user_id))


@shared_task(
    base=EffectTask, name="record_login", description="Sign-in from {ip} recorded", atomic=True
)
def record_login(user_id: int, ip: str | None, user_agent: str, at: str, sign_in: str = "") -> None:
    login = effects.record_login(user_id, ip, user_agent, at, sign_in)
    if login.new_device:
        send_new_sign_in_email.offload(login_id=login.pk)


@task(queue_name="records", user_arg="user_id", description="Sign-out recorded", atomic=True)
def record_logout(user_id: int, sign_in: str, at: str) -> None:
    effects.record_logout(user_id, sign_in, at)


@shared_task(base=EffectTask, name="send_new_sign_in_email", description="New sign-in email")
def send_new_sign_in_email(login_id: int) -> None:
    send(effects.new_sign_in_email(login_id))


@shared_task(
    base=EffectTask,
    name="record_failed_login",
    description="Failed sign-in from {ip} recorded",
    atomic=True,
)
def record_failed_login(username_hash: str, ip: str | None, at: str, user_id: int | None) -> None:
    failure = effects.record_failed_login(username_hash, ip, at, user_id)
    if failure.alerted:
        send_failed_login_alert.offload(failed_login_id=failure.pk)


@shared_task(base=EffectTask, name="send_failed_login_alert", description="Failed sign-ins alert")
def send_failed_login_alert(failed_login_id: int) -> None:
    send(effects.failed_login_alert(failed_login_id))


# owner_id is not needed by the work: it names whose file it was, for their activity page.
@shared_task(
    base=EffectTask,
    name="delete_stored_file",
    description="File removed from storage",
    user_arg="owner_id",
)
def delete_stored_file(name: str, owner_id: int | None = None) -> None:
    effects.delete_stored_file(name)


# coalesce: several saves in a row need one recount, as long as it has not started yet.
@shared_task(
    base=EffectTask,
    name="refresh_profile_counters",
    description="Counters refreshed",
    atomic=True,
    coalesce=True,
)
def refresh_profile_counters(user_id: int) -> None:
    effects.refresh_profile_counters(user_id)


@shared_task(
    base=EffectTask,
    name="send_share_email",
    description="Share email to {recipient}",
    user_arg="shared_by_id",
)
def send_share_email(document_id: int, recipient: str, shared_by_id: int) -> None:
    send(effects.share_email(document_id, recipient, shared_by_id))


@shared_task(
    base=EffectTask,
    name="send_email_change_notice",
    description="{old_email} told of the change to {new_email}",
)
def send_email_change_notice(user_id: int, username: str, old_email: str, new_email: str) -> None:
    send(effects.email_change_notice(username, old_email, new_email))


@shared_task(
    base=EffectTask,
    name="send_email_change_confirmation",
    description="{email} confirmed as the new address",
)
def send_email_change_confirmation(user_id: int, email: str) -> None:
    send(effects.email_change_confirmation(user_id, email))


# user_arg=None: the account is gone by the time this runs; the effect concerns no user.
@shared_task(
    base=EffectTask,
    name="send_account_closed_email",
    description="Account closed email to {email}",
    user_arg=None,
)
def send_account_closed_email(email: str, username: str) -> None:
    send(effects.account_closed_email(email, username))


@shared_task(base=EffectTask, name="send_password_reset_email", description="Password reset email")
def send_password_reset_email(user_id: int) -> None:
    send(effects.password_reset_email(user_id))
