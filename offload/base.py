"""The Celery task base for effects: claim in the ledger, run, settle, retry or dead-letter."""

import logging
import time
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from django.core.exceptions import ObjectDoesNotExist, SuspiciousOperation, ValidationError
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from . import ledger, metrics
from .conf import conf
from .lease import LeaseLost, heartbeat
from .ledger import Claim, Failure, current_claim, summarize
from .log import log_step
from .models import Effect
from .outbox import offload

logger = logging.getLogger(__name__)

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
# The database could not answer (down, unreachable, a connection that broke): not the
# message's fault.
UNAVAILABLE = (OperationalError, InterfaceError)
# Errors that can stop a query halfway: its connection is closed before anything else uses it.
INTERRUPTIONS = (*UNAVAILABLE, SoftTimeLimitExceeded)


class Skip(Exception):
    """Raised by an effect's work when what it is about has gone (a user deleted before their
    welcome email): the effect ends as ``skipped``, with ``reason``, never as ``done``. An
    atomic effect's writes before it are rolled back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


# Claims that failed in a row in this process, for its pause before handing a message back.
_failed_claims = 0


class EffectTask(Task[..., Any]):
    """Runs the effect whose id the message carries, with the arguments stored in the ledger.

    The message is only a pointer; a redelivered or duplicated message for an effect that is done,
    dead or being run by a live attempt finds nothing to claim and does nothing.

        @shared_task(base=EffectTask, name="send_welcome_email")
        def send_welcome_email(user_id: int) -> None: ...

        send_welcome_email.offload(user_id=user.pk)   # in the transaction that made the user
    """

    # The message carries an effect id, the function takes the ledger's arguments.
    typing = False
    # Retries wait in the ledger (pending until retry_at, published by the relay), never as a
    # countdown message held by a worker; the ledger counts the attempts (EFFECT_MAX_ATTEMPTS).
    max_retries = 0
    # The ledger is the record of every outcome: a result per task as well would cost a write
    # per effect to a result store.
    ignore_result = True
    # Acknowledged after the attempt, so a worker that dies mid-task hands the message back;
    # the claim makes the repeat harmless.
    acks_late = True
    reject_on_worker_lost = True
    # Killed at the hard limit (fixed when this module is imported); its lease then lapses.
    time_limit = conf.EFFECT_TIME_LIMIT
    soft_time_limit = max(1, conf.EFFECT_TIME_LIMIT * 4 // 5)
    # The argument naming the user the effect concerns: recorded on the ledger row, so that the
    # user's activity lists it. None when the task names no user.
    user_arg: str | None = "user_id"
    # True for effects that only write to the database: the work and "done" commit together,
    # so a repeat can never apply them twice. Effects that talk to the outside world (SMTP,
    # storage) cannot be rolled back and leave it False.
    atomic = False
    # True when running it once for several identical requests is enough (a recount): offload()
    # folds a new request into a pending one with the same arguments.
    coalesce = False
    # What people see on the activity page: a str.format template over the arguments.
    description = ""
    # Errors no other attempt can fix: dead-lettered at once.
    permanent_errors: tuple[type[Exception], ...] = PERMANENT_ERRORS
    # The retry policy; None: the EFFECT_* settings.
    max_attempts: int | None = None
    backoff: int | None = None
    backoff_max: int | None = None
    # Whether what the work returns is kept in the ledger (django.tasks results; JSON).
    keeps_result = False

    def offload(self, **kwargs: Any) -> Effect:
        """Record this effect in the current transaction; publish it after the commit."""
        return offload(self, **kwargs)

    def __call__(self, effect_id: Any) -> str:
        # The hard time limit counts from here, as the pool's does: the message's own limit,
        # else the task's.
        hard_limit = (self.request.timelimit or (None, None))[0] or self.time_limit
        deadline = time.monotonic() + hard_limit if hard_limit else float("inf")
        try:
            return self._attempt(effect_id, deadline)
        except BaseException:
            # Whatever ended the attempt may have interrupted a query (a time limit, a lost
            # connection): that connection would fail the next effect of this process with
            # "another command is already in progress". Celery's Django fixup closes
            # connections only every CELERY_DB_REUSE_MAX tasks, and checks none of them.
            _discard_connection()
            raise
        finally:
            if connection.errors_occurred:
                connection.close_if_unusable_or_obsolete()

    def _attempt(self, effect_id: Any, deadline: float) -> str:
        if type(effect_id) is not int:
            # Anyone who can write to the broker can send us a message: trust nothing in it.
            logger.warning("task=%s rejected a message with a non-integer effect id", self.name)
            return "rejected"
        global _failed_claims
        try:
            claim = ledger.claim(effect_id, self.name, self.request.hostname or "")
        except UNAVAILABLE as exc:
            _failed_claims += 1
            raise self._claim_failed(effect_id, exc) from exc
        _failed_claims = 0
        if claim is None:  # ended, held by a live attempt, or another task's effect
            log_step(logger, logging.INFO, effect=effect_id, task=self.name, step="ignored")
            return "ignored"
        started = time.perf_counter()
        max_attempts = self.max_attempts or conf.EFFECT_MAX_ATTEMPTS
        if claim.attempt > max_attempts:
            # The earlier attempts never finished (their worker died, or the time limit killed
            # them): give up rather than run it forever.
            return self._dead(claim, RuntimeError("earlier attempts never finished"), started)
        self._report(claim, "started", started)
        token = current_claim.set(claim)
        try:
            with (
                heartbeat.hold(claim, deadline),
                transaction.atomic() if self.atomic else nullcontext(),
            ):
                returned = self.run(**claim.args)
                if not ledger.complete(claim, returned if self.keeps_result else None):
                    # Another attempt took the effect over; an atomic effect's work rolls back.
                    raise LeaseLost(f"effect {claim.id}: attempt {claim.attempt} was overtaken")
        except LeaseLost as exc:
            self._report(claim, "lost", started, exc)
            return "lost"
        except Skip as skipped:
            step = "skipped" if ledger.skip(claim, str(skipped)) else "lost"
            self._report(claim, step, started, reason=str(skipped))
            return step
        except Exception as exc:  # noqa: BLE001 - any other error is worth another attempt
            if isinstance(exc, INTERRUPTIONS):
                _discard_connection()  # it may be mid-query: settle on a new one
            if isinstance(exc, self.permanent_errors) or claim.attempt >= max_attempts:
                return self._dead(claim, exc, started)
            retry_at = timezone.now() + timedelta(seconds=self.retry_delay(claim.attempt))
            held = ledger.release(claim, Failure.of(exc), retry_at)
            return self._settled(held, "retry", claim, started, exc)
        finally:
            current_claim.reset(token)
        self._report(claim, "done", started)
        return "done"

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt``: full jitter over
        backoff * 2**(attempt - 1), at most backoff_max."""
        return float(
            get_exponential_backoff_interval(
                factor=self.backoff or conf.EFFECT_RETRY_BACKOFF,
                retries=attempt - 1,
                maximum=self.backoff_max or conf.EFFECT_RETRY_BACKOFF_MAX,
                full_jitter=True,
            )
        )

    def describe(self, args: dict[str, Any]) -> str:
        """What people see of an effect with the stored ``args``: the description, formatted
        with them ("Share email to {recipient}" reads "Share email to bob@example.com"). One
        it lacks, or None, reads "unknown"; a description that is not such a template (a
        stray brace) reads as it is."""
        text = self.description or self.name
        values = _Arguments({k: v for k, v in args.items() if v is not None})
        try:
            return text.format_map(values)
        except (ValueError, IndexError, AttributeError, KeyError):
            return text

    def _claim_failed(self, effect_id: int, exc: Exception) -> Reject:
        """The ledger cannot be reached: hand the message back rather than acknowledge it.

        This process waits before it does (1, 2, 4, then 5 s while the failures go on): a
        worker that cannot reach the database holds no more than its prefetched messages, each
        handed back after a pause, instead of bouncing every message it is given.
        """
        _discard_connection()
        pause = min(2.0 ** (_failed_claims - 1), 5.0)
        log_step(
            logger, logging.WARNING, effect=effect_id, task=self.name, step="requeued",
            error=f"{summarize(exc)} (ledger unreachable; back to the queue in {pause:.0f} s)",
        )  # fmt: skip
        time.sleep(pause)
        return Reject(exc, requeue=True)

    def _dead(self, claim: Claim, exc: Exception, started: float) -> str:
        return self._settled(ledger.bury(claim, Failure.of(exc)), "dead", claim, started, exc)

    def _settled(
        self, held: bool, step: str, claim: Claim, started: float, exc: BaseException
    ) -> str:
        """Log what a retry or dead-letter write did: nothing ("lost") when another attempt
        had taken the effect over, since every write of an attempt is fenced by its number."""
        step = step if held else "lost"
        self._report(claim, step, started, exc)
        return step

    def _report(
        self,
        claim: Claim,
        step: str,
        started: float,
        exc: BaseException | None = None,
        reason: str | None = None,
    ) -> None:
        """One log line per attempt, at its end: done, skipped, retry, dead or lost, with the
        attempt's duration ("started" only at DEBUG). An attempt that ended (all but started
        and lost) is also counted for /metrics."""
        seconds = time.perf_counter() - started
        if step in metrics.OUTCOMES:
            metrics.observe(claim, step, seconds)
        fields: dict[str, Any] = {
            "effect": claim.id,
            "task": self.name,
            "user": claim.user_id,
            "attempt": claim.attempt,
            "step": step,
            "duration_ms": round(seconds * 1000, 1),
        }
        if exc is not None:
            fields["error"] = summarize(exc)
        if reason is not None:
            fields["reason"] = reason
        if exc is not None or step == "lost":
            level = logging.WARNING
        else:
            level = logging.DEBUG if step == "started" else logging.INFO
        log_step(logger, level, **fields)


def _discard_connection() -> None:
    """Close this thread's database connection (the next query opens a new one), unless a
    caller's transaction is still open on it (an effect called directly, in a test)."""
    if not connection.in_atomic_block:
        connection.close()


class _Arguments(dict[str, object]):
    """An effect's arguments for its description: one it lacks reads "unknown"."""

    def __missing__(self, name: str) -> str:
        return "unknown"
