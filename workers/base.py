"""The Celery task base for effects: claim in the ledger, run, settle, retry or dead-letter."""

import logging
import time
from contextvars import ContextVar

from celery import Task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, SuspiciousOperation, ValidationError
from django.db import transaction

from . import ledger

logger = logging.getLogger(__name__)

# The effect being run, for work that needs a stable identity across attempts (the Message-ID
# of an email, so a repeat after a crash is recognisable as the same message).
current_effect: ContextVar = ContextVar("current_effect", default=None)

# Errors that another attempt cannot fix: bad arguments, unsafe paths, header injection
# (BadHeaderError is a ValueError). They dead-letter at once instead of retrying.
PERMANENT_ERRORS = (
    TypeError,
    ValueError,
    LookupError,
    ObjectDoesNotExist,
    SuspiciousOperation,
    ValidationError,
)


class EffectTask(Task):
    """Runs the effect whose id the message carries, with the arguments stored in the ledger.

    The message is only a pointer; a redelivered or duplicated message for an effect that is done,
    dead or being run by a live attempt finds nothing to claim and does nothing.
    """

    # The message carries an effect id, the function takes the ledger's arguments.
    typing = False
    # The ledger counts attempts (EFFECT_MAX_ATTEMPTS), across redeliveries and relays too;
    # Celery's own counter (3 by default) would give up first and strand the effect.
    max_retries = None
    # The ledger is the record of every outcome: a result row per task as well would cost a
    # database write per effect (the django-db backend cut a worker from ~2,000 to ~470/s).
    ignore_result = True
    # True for effects that only write to the database: the work and "done" commit together,
    # so a repeat can never apply them twice. Effects that talk to the outside world (SMTP,
    # storage) cannot be rolled back and leave it False.
    atomic = False
    # True when running it once for several identical requests is enough (a recount): offload()
    # folds a new request into a pending one with the same arguments.
    coalesce = False
    # What people see on the activity page.
    description = ""

    def __call__(self, effect_id):
        if type(effect_id) is not int:
            # Anyone who can write to Redis can send us a message: trust nothing in it.
            logger.warning("task=%s rejected a message with a non-integer effect id", self.name)
            return "rejected"
        effect = ledger.claim(effect_id, self.name)
        if effect is None:  # done, dead, held by a live attempt, or another task's effect
            logger.info("effect=%s task=%s step=skipped", effect_id, self.name)
            return "skipped"
        started = time.perf_counter()
        self._log(effect, "started", started)
        token = current_effect.set(effect)
        try:
            if self.atomic:
                with transaction.atomic():
                    self.run(**effect.args)
                    ledger.complete(effect)
            else:
                self.run(**effect.args)
                ledger.complete(effect)
        except PERMANENT_ERRORS as exc:
            return self._dead(effect, exc, started)
        except Exception as exc:
            if effect.attempts >= settings.EFFECT_MAX_ATTEMPTS:
                return self._dead(effect, exc, started)
            ledger.release(effect, _describe(exc))
            self._log(effect, "retry", started, exc)
            countdown = get_exponential_backoff_interval(
                factor=settings.EFFECT_RETRY_BACKOFF,
                retries=effect.attempts - 1,
                maximum=settings.EFFECT_RETRY_BACKOFF_MAX,
                full_jitter=True,
            )
            raise self.retry(exc=exc, countdown=countdown) from exc
        finally:
            current_effect.reset(token)
        self._log(effect, "done", started)
        return "done"

    def _dead(self, effect, exc, started):
        ledger.bury(effect, _describe(exc))
        self._log(effect, "dead", started, exc)
        return "dead"

    def _log(self, effect, step, started, exc=None):
        """One line per lifecycle step: started, then done, retry or dead."""
        logger.log(
            logging.WARNING if exc else logging.INFO,
            "effect=%s task=%s user=%s attempt=%s step=%s duration_ms=%.1f%s",
            effect.pk,
            self.name,
            effect.user_id,
            effect.attempts,
            step,
            (time.perf_counter() - started) * 1000,
            f" error={_describe(exc)!r}" if exc else "",
        )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
