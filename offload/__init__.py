"""Offload: Django signal receivers hand their work to Celery workers through a durable ledger.

    from offload import EffectTask, offload

    @shared_task(base=EffectTask, name="send_welcome_email")
    def send_welcome_email(user_id: int) -> None: ...

    def welcome_new_user(sender, instance, created, raw=False, **kwargs):  # a post_save receiver
        if created and not raw:
            send_welcome_email.offload(user_id=instance.pk)   # or offload(send_welcome_email, ...)

Work whose subject has gone by the time it runs raises ``Skip("why")``: the effect ends as
``skipped`` with that reason, never as ``done``.

The same through Django's Tasks API (``@task``, ``.enqueue()``, ``get_result()``): set
``TASKS = {"default": {"BACKEND": "offload.backends.LedgerBackend"}}`` (backends.py).

Add "offload" to INSTALLED_APPS (its app label is ``workers``, the name it had before it was a
reusable app, so existing tables and migrations carry on). Settings: offload/conf.py.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import EffectTask, Skip
    from .outbox import offload

__all__ = ["EffectTask", "Skip", "offload"]


def __getattr__(name: str) -> Any:
    # Imported on first use: Django imports this package before the app registry is ready,
    # and both names need the Effect model.
    if name == "EffectTask":
        from .base import EffectTask

        return EffectTask
    if name == "Skip":
        from .base import Skip

        return Skip
    if name == "offload":
        from .outbox import offload

        return offload
    raise AttributeError(f"module 'offload' has no attribute {name!r}")
