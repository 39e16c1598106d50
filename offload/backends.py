"""Django's Tasks API (``django.tasks``) on the ledger and Celery workers.

    TASKS = {"default": {"BACKEND": "offload.backends.LedgerBackend"}}

    from django.tasks import task

    @task
    def send_welcome_email(user_id: int) -> None: ...

    send_welcome_email.enqueue(user_id=user.pk)   # in the transaction that made the user

``enqueue()`` writes an effect row in the caller's transaction and publishes its id once that
commits, as ``offload()`` does: a rolled-back transaction runs nothing, and a process that
dies after the commit loses nothing (the relay publishes it). A worker runs the task under the
ledger's claim, lease, retries and dead letter; ``get_result()`` reads the row.

Each task becomes a Celery task named by its module path (registered when the task is
defined: put tasks in an app's ``tasks.py``, which Celery's autodiscovery imports in the
worker), so Flower, /metrics and the admin show it like any other effect.

Keyword arguments of ``@task`` for what ``django.tasks`` cannot say (the defaults in brackets):
``user_arg`` ["user_id"], ``description`` [the docstring's first line], ``atomic`` [False],
``coalesce`` [False], ``max_attempts``, ``backoff``, ``backoff_max`` [the backend's OPTIONS
MAX_ATTEMPTS, BACKOFF and BACKOFF_MAX, else the EFFECT_* settings]. EffectTask says what each
means.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any, ParamSpec, TypeVar

from celery import current_app, shared_task
from django.core.checks import CheckMessage
from django.core.checks import Warning as CheckWarning
from django.db import DatabaseError, transaction
from django.tasks import DEFAULT_TASK_QUEUE_NAME, Task, TaskContext, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTaskBackend, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from .base import EffectTask
from .ledger import current_claim
from .models import Effect
from .outbox import coalescing_key, pending_twin, record, user_of

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")

# What LedgerTask adds to a Task: the EffectTask options of its Celery task.
EXTRAS = ("user_arg", "atomic", "coalesce", "max_attempts", "backoff", "backoff_max")

# The backend's OPTIONS: the retry policy of its tasks (a task's own @task arguments win).
OPTIONS = {"MAX_ATTEMPTS": "max_attempts", "BACKOFF": "backoff", "BACKOFF_MAX": "backoff_max"}

STATUSES = {
    Effect.Status.PENDING: TaskResultStatus.READY,  # new, or waiting for its retry
    Effect.Status.RUNNING: TaskResultStatus.RUNNING,
    Effect.Status.DONE: TaskResultStatus.SUCCESSFUL,
    Effect.Status.SKIPPED: TaskResultStatus.FAILED,  # it raised Skip: its work was not done
    Effect.Status.DEAD: TaskResultStatus.FAILED,  # after its last attempt
}


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerTask(Task):  # type: ignore[type-arg]  # generic only in django-stubs
    """A ``django.tasks`` Task with offload's options (the backend's ``task_class``)."""

    user_arg: str | None = "user_id"
    description: str = ""
    atomic: bool = False
    coalesce: bool = False
    max_attempts: int | None = None
    backoff: int | None = None
    backoff_max: int | None = None


class TaskEffect(EffectTask):
    """The Celery task of a ``django.tasks`` task: runs it on the ledger's arguments
    ({"args": [...], "kwargs": {...}}), keeps what it returns, and sends Django's signals."""

    keeps_result = True
    django_task: Task[..., Any]

    def describe(self, args: dict[str, Any]) -> str:
        return super().describe(args.get("kwargs") or {})

    def _attempt(self, effect_id: Any, deadline: float) -> str:
        step = super()._attempt(effect_id, deadline)
        # Sent once the attempt is over, outside its error handling: Django's own receiver
        # logs the exception being handled, and an error's message may quote a password.
        if step in FINISHED:
            backend = self.django_task.get_backend()
            try:
                result = backend.get_result(str(effect_id))
            except DatabaseError as exc:  # settled all the same; the receivers miss this one
                logger.warning("effect=%s task_finished not sent: %s", effect_id, exc)
            else:
                task_finished.send_robust(type(backend), task_result=result)
        return step


# The steps that end an effect: SUCCESSFUL or FAILED.
FINISHED = frozenset({"done", "skipped", "dead"})


def run_task(effect: TaskEffect, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The work of every TaskEffect: call the task, as Django's own backends do."""
    task = effect.django_task
    backend = task.get_backend()
    claim = current_claim.get()
    assert claim is not None  # EffectTask set it
    result = backend.get_result(str(claim.id))  # RUNNING, with this attempt's worker
    task_started.send_robust(type(backend), task_result=result)
    if task.takes_context:
        returned = task.call(TaskContext(task_result=result), *args, **kwargs)
    else:
        returned = task.call(*args, **kwargs)
    return _json(returned)


class LedgerBackend(BaseTaskBackend):
    task_class = LedgerTask
    supports_defer = True  # run_after: the row waits in the ledger; the relay publishes it
    supports_async_task = True  # run by Django's async_to_sync in the worker
    supports_get_result = True
    # Redis lists are first in, first out, and kombu's emulated priorities need a list per
    # level and polling; an urgent task belongs on a queue of its own (queue_name).
    supports_priority = False

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        if unknown := sorted(set(self.options) - set(OPTIONS)):
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]['OPTIONS'] has no {', '.join(unknown)}: it takes"
                f" {', '.join(OPTIONS)}."
            )
        self.retry_policy = {OPTIONS[name]: value for name, value in self.options.items()}

    def validate_task(self, task: Task[..., Any]) -> None:
        """Django's checks, then the task's Celery task, for the worker to run it by."""
        super().validate_task(task)
        self._celery_task(task)

    def enqueue(
        self, task: Task[_P, _R], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[_P, _R]:
        self.validate_task(task)
        stored = {"args": _json(list(args)), "kwargs": _json(dict(kwargs))}
        key = coalescing_key(task.module_path, stored) if getattr(task, "coalesce", False) else ""
        effect = (key and pending_twin(key)) or record(
            task.module_path,
            stored,
            user_id=user_of(getattr(task, "user_arg", "user_id"), stored["kwargs"]),
            key=key,
            queue="" if task.queue_name == DEFAULT_TASK_QUEUE_NAME else task.queue_name,
            not_before=task.run_after,
        )
        result = self._result(task, effect)
        # Enqueued once it is in the ledger for good: never for a rolled-back transaction.
        transaction.on_commit(
            partial(task_enqueued.send_robust, type(self), task_result=result), robust=True
        )
        return result

    def get_result(self, result_id: str) -> TaskResult[..., Any]:
        try:
            effect = Effect.objects.get(pk=int(result_id))
        except (ValueError, TypeError, Effect.DoesNotExist):
            raise TaskResultDoesNotExist(result_id) from None
        task = self._task_named(effect.task)
        if task is None:  # an effect of an EffectTask, or of another backend
            raise TaskResultDoesNotExist(result_id)
        return self._result(task, effect)

    def check(self, **kwargs: Any) -> list[CheckMessage]:
        declared = set(current_app.amqp.queues)
        unknown = sorted(self.queues - {DEFAULT_TASK_QUEUE_NAME} - declared)
        if not unknown or not current_app.conf.task_queues:
            return []
        return [
            CheckWarning(
                f"TASKS[{self.alias!r}]['QUEUES'] names queues Celery does not declare:"
                f" {', '.join(unknown)}.",
                hint="Add them to CELERY_TASK_QUEUES, and start workers with -Q that reads them.",
                id="offload.W002",
            )
        ]

    def _celery_task(self, task: Task[..., Any]) -> Any:
        name = task.module_path
        if name not in _registered:
            # A LedgerTask's options; a plain Task's are EffectTask's defaults.
            options = {option: getattr(task, option) for option in EXTRAS if hasattr(task, option)}
            for option, value in self.retry_policy.items():  # where the task sets none
                if options.get(option) is None:
                    options[option] = value
            description = getattr(task, "description", "") or _first_line(task.func.__doc__)
            _registered[name] = shared_task(  # type: ignore[no-untyped-call]  # untyped
                name=name,
                base=TaskEffect,
                bind=True,
                django_task=task,
                description=description,
                **options,
            )(run_task)
        return _registered[name]

    def _task_named(self, name: str) -> Task[..., Any] | None:
        """The task of a ledger row, if it is one of this backend's."""
        celery_task = current_app.tasks.get(name)
        task = getattr(celery_task, "django_task", None)
        if task is None:
            try:
                task = import_string(name)
            except ImportError:
                return None
        if not isinstance(task, Task) or task.backend != self.alias:
            return None
        return task

    def _result(self, task: Task[_P, _R], effect: Effect) -> TaskResult[_P, _R]:
        errors = [TaskError(**error) for error in effect.errors]
        if effect.status == Effect.Status.SKIPPED:
            errors.append(
                TaskError(exception_class_path="offload.base.Skip", traceback=effect.reason)
            )
        result = TaskResult(
            task=task,
            id=str(effect.pk),
            status=STATUSES[Effect.Status(effect.status)],
            enqueued_at=effect.created_at,
            started_at=effect.started_at,
            finished_at=effect.finished_at,
            last_attempted_at=effect.started_at,
            args=effect.args["args"],
            kwargs=effect.args["kwargs"],
            backend=self.alias,
            errors=errors,
            worker_ids=list(effect.workers),
        )
        object.__setattr__(result, "_return_value", effect.result)  # as Django's backends do
        return result


# The Celery task of each django.tasks task, by module path: one, however many times the task
# is made again (Task.using() makes a copy, and validates it).
_registered: dict[str, Any] = {}


def _json(value: Any) -> Any:
    """``value`` as JSON gives it back, or TypeError/ValueError (Django's rule for arguments
    and return values)."""
    normal = normalize_json(value)
    if json.loads(json.dumps(normal, allow_nan=False)) != normal:
        raise ValueError("Task arguments must round-trip through JSON (keys must be strings).")
    return normal


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0]
