"""The Celery tasks, one per effect. Each is a thin shell: EffectTask claims the ledger row and
passes its stored arguments; the work itself is a plain function in notifications/effects.py.

Queues (CELERY_TASK_ROUTES in settings): `emails` (SMTP can be slow), `files` (storage),
`records` (database only).
"""

from celery import shared_task
from django.conf import settings

from notifications import effects

from . import ledger
from .base import EffectTask


@shared_task(base=EffectTask, name="send_welcome_email", description="Welcome email")
def send_welcome_email(user_id: int) -> None:
    effects.send_welcome_email(user_id)


@shared_task(base=EffectTask, name="record_login", description="Sign-in recorded", atomic=True)
def record_login(user_id: int, ip: str | None, user_agent: str, at: str) -> None:
    effects.record_login(user_id, ip, user_agent, at)


@shared_task(base=EffectTask, name="send_new_sign_in_email", description="New sign-in email")
def send_new_sign_in_email(login_id: int) -> None:
    effects.send_new_sign_in_email(login_id)


@shared_task(
    base=EffectTask, name="record_failed_login", description="Failed sign-in recorded", atomic=True
)
def record_failed_login(username_hash: str, ip: str | None, at: str, user_id: int | None) -> None:
    effects.record_failed_login(username_hash, ip, at, user_id)


@shared_task(base=EffectTask, name="send_failed_login_alert", description="Failed sign-ins alert")
def send_failed_login_alert(failed_login_id: int) -> None:
    effects.send_failed_login_alert(failed_login_id)


@shared_task(base=EffectTask, name="delete_stored_file", description="Old file deleted")
def delete_stored_file(name: str) -> None:
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


@shared_task(base=EffectTask, name="send_share_email", description="Share email")
def send_share_email(document_id: int, recipient: str, shared_by_id: int) -> None:
    effects.send_share_email(document_id, recipient, shared_by_id)


# --- Upkeep, scheduled by beat (CELERY_BEAT_SCHEDULE) ------------------------------------------


@shared_task(name="relay_effects", ignore_result=True)
def relay_effects() -> int:
    return ledger.relay()


@shared_task(name="prune_effects", ignore_result=True)
def prune_effects() -> int:
    return ledger.prune(settings.EFFECT_RETENTION_DAYS)
