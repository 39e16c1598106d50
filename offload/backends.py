"""Django's Tasks API (``django.tasks``) on the ledger and Celery workers.

    TASKS = {"default": {"BACKEND": "offload.backends.LedgerBackend"}}

    from django.tasks import task

    @task(user_arg="user_id")
    def send_welcome_email(user_id: int) -> None: ...

    send_welcome_email.enqueue(user_id=user.pk)   # in the transaction that made the user

``enqueue()`` writes an effect row in the caller's transaction and publishes its id once that
commits, as ``offload()`` does: a rolled-back transaction runs nothing, and a process that
dies after the commit loses nothing (the relay publishes it). A worker runs the task under the
ledger's claim, lease, retries and dead letter; ``get_result()`` reads the row.

Each task becomes a Celery task of its own, named by its module path and registered when the
task is defined, so Flower, /metrics and the admin show it like any other effect, and a
message can only run the task its effect names. A worker must therefore import the module:
put tasks in an app's ``tasks.py`` (Celery's autodiscovery imports it) or list the module in
CELERY_IMPORTS; ``manage.py check`` warns of a task that is in neither.

Keyword arguments of ``@task`` for what ``django.tasks`` cannot say (the defaults in brackets):
``user_arg`` [None: the argument naming the user the effect concerns], ``description`` [the
docstring's first line], ``atomic`` [False], ``coalesce`` [False], ``permanent_errors``
[EffectTask's], ``max_attempts``, ``backoff``, ``backoff_max`` [the backend's OPTIONS
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
from django.apps import apps
from django.core.checks import CheckMessage
from django.core.checks import Warning as CheckWarning
from django.db import DatabaseError, transaction
from django.tasks import DEFAULT_TASK_QUEUE_NAME, Task, TaskContext, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
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

# The backend's OPTIONS, each the default of an EffectTask option for its tasks.
RETRY_OPTIONS = {
    "MAX_ATTEMPTS": "max_attempts", "BACKOFF": "backoff", "BACKOFF_MAX": "backoff_max"
}  # fmt: skip

# What LedgerTask adds to a Task: options of its Celery task (an EffectTask).
EXTRAS = ("user_arg", "atomic", "coalesce", "permanent_errors", *RETRY_OPTIONS.values())

STATUSES = {
    Effect.Status.PENDING: TaskResultStatus.READY,  # new, or waiting for its retry
    Effect.Status.RUNNING: TaskResultStatus.RUNNING,
    Effect.Status.DONE: TaskResultStatus.SUCCESSFUL,
    Effect.Status.SKIPPED: TaskResultStatus.FAILED,  # it raised Skip: its work was not done
    Effect.Status.DEAD: TaskResultStatus.FAILED,  # after its last attempt
}

# The steps of an attempt that end its effect: SUCCESSFUL or FAILED.
FINISHED = frozenset({"done", "skipped", "dead"})

# The Celery task of each django.tasks task, by module path: one, however many times the task
# is made again (Task.using() makes a copy, and validates it).
_registered: dict[str, Any] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerTask(Task):  # type: ignore[type-arg]  # generic only in django-stubs
    """A ``django.tasks`` Task with offload's options (the backend's ``task_class``)."""

    user_arg: str | None = None
    description: str = ""
    atomic: bool = False
    coalesce: bool = False
    permanent_errors: tuple[type[Exception], ...] | None = None
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


def run_task(effect: TaskEffect, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The work of every TaskEffect: call the task, as Django's own backends do."""
    task = effect.django_task
    backend = task.get_backend()
    claim = current_claim.get()
    if claim is None:  # called outside EffectTask, which sets it
        raise RuntimeError(f"{task.module_path} runs only from its effect's message")
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
    # kombu's Redis transport emulates priorities with a list per step (0-9, lower first) read
    # in order; Django's -100..100 would fold onto it, and every step would be a queue for
    # the relay to watch. An urgent task belongs on a queue of its own (queue_name).
    supports_priority = False

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        problems = [f"no {name}" for name in sorted(set(self.options) - set(RETRY_OPTIONS))]
        problems += [
            f"{name} must be a whole number of at least 1"
            for name, value in self.options.items()
            if name in RETRY_OPTIONS and not (type(value) is int and value >= 1)
        ]
        if problems:
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]['OPTIONS']: {'; '.join(problems)} (it takes"
                f" {', '.join(RETRY_OPTIONS)})."
            )
        self.retry_policy = {RETRY_OPTIONS[name]: value for name, value in self.options.items()}

    def validate_task(self, task: Task[..., Any]) -> None:
        """Django's checks, then the task's Celery task, for the worker to run it by."""
        super().validate_task(task)
        name_length = Effect._meta.get_field("task").max_length or 0
        if len(task.module_path) > name_length:
            raise InvalidTask(f"A task's module path must be at most {name_length} characters.")
        celery_task = _registered.get(task.module_path)
        if celery_task is None:
            _registered[task.module_path] = shared_task(  # type: ignore[no-untyped-call]
                name=task.module_path,
                base=TaskEffect,
                bind=True,
                django_task=task,
                description=getattr(task, "description", "") or _first_line(task.func.__doc__),
                **self.celery_options(task),
            )(run_task)
        elif celery_task.django_task.backend != task.backend:
            raise InvalidTask(
                f"{task.module_path} is run by the {celery_task.django_task.backend!r} backend;"
                " a task has one backend."
            )

    def celery_options(self, task: Task[..., Any]) -> dict[str, Any]:
        """The EffectTask options of ``task``'s Celery task: the task's own, else this
        backend's OPTIONS (a plain Task has none: EffectTask's defaults)."""
        options = {option: getattr(task, option) for option in EXTRAS if hasattr(task, option)}
        options = {option: value for option, value in options.items() if value is not None}
        options.setdefault("user_arg", None)  # a plain Task concerns no user
        return {**self.retry_policy, **options}

    def enqueue(
        self, task: Task[_P, _R], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[_P, _R]:
        self.validate_task(task)
        stored = {"args": _json(list(args)), "kwargs": _json(dict(kwargs))}
        # A deferred task never folds into a twin that would run before its time.
        coalesce = getattr(task, "coalesce", False) and task.run_after is None
        key = coalescing_key(task.module_path, stored) if coalesce else ""
        if key and (twin := pending_twin(key)):
            return self._result(task, twin)  # already enqueued, and announced
        effect = record(
            task.module_path,
            stored,
            user_id=user_of(getattr(task, "user_arg", None), stored["kwargs"]),
            key=key,
            queue="" if task.queue_name == DEFAULT_TASK_QUEUE_NAME else task.queue_name,
            not_before=task.run_after,
        )
        result = self._result(task, effect)
        # Enqueued once it is in the ledger for good: never for a rolled-back transaction.
        transaction.on_commit(partial(task_enqueued.send_robust, type(self), task_result=result))
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
        messages: list[CheckMessage] = []
        undeclared = sorted(self.queues - {DEFAULT_TASK_QUEUE_NAME} - set(current_app.amqp.queues))
        if undeclared:
            messages.append(
                CheckWarning(
                    f"TASKS[{self.alias!r}]['QUEUES'] names queues Celery does not declare:"
                    f" {', '.join(undeclared)}.",
                    hint="Add them to CELERY_TASK_QUEUES, and start workers that read them (-Q).",
                    id="offload.W002",
                )
            )
        for name, celery_task in sorted(_registered.items()):
            module = celery_task.django_task.func.__module__
            if celery_task.django_task.backend == self.alias and not _worker_imports(module):
                messages.append(
                    CheckWarning(
                        f"Task {name} is in {module}, which a Celery worker does not import:"
                        " its effects would wait for a worker that knows it.",
                        hint="Move it to an installed app's tasks.py, or add the module to"
                        " CELERY_IMPORTS.",
                        id="offload.W003",
                    )
                )
        return messages

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
            # The ledger keeps when its latest attempt started.
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


def _json(value: Any) -> Any:
    """``value`` as JSON gives it back, or TypeError/ValueError (Django's rule for arguments
    and return values)."""
    normal = normalize_json(value)
    if json.loads(json.dumps(normal, allow_nan=False)) != normal:
        raise ValueError("Task arguments must round-trip through JSON (keys must be strings).")
    return normal


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0]


def _worker_imports(module: str) -> bool:
    """Whether a Celery worker of this project imports ``module``: an installed app's tasks
    module (autodiscovery), or one CELERY_IMPORTS or CELERY_INCLUDE names."""
    conf = current_app.conf
    listed = {*(conf.imports or ()), *(conf.include or ())}
    discovered = {f"{app.name}.tasks" for app in apps.get_app_configs()}
    return module in listed | discovered
