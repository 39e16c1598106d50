"""offload's django.tasks backend (offload.backends.LedgerBackend) against what Django's
documentation promises of any backend: validation, arguments that round-trip through JSON, the
three signals, the result's fields and statuses; and what it adds: on-commit enqueue, retries,
run_after in the ledger.

The worker's part is the task's Celery task called as a function with the effect id, as a
worker calls it (no broker); the whole path with real worker processes is test_tasks_api.py.
"""

import asyncio
import json
import logging
import math
from datetime import datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from celery import current_app
from django.db import transaction
from django.tasks import TaskResultStatus, default_task_backend, task, task_backends
from django.tasks.exceptions import (
    InvalidTask,
    InvalidTaskBackend,
    TaskResultDoesNotExist,
    TaskResultMismatch,
)
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone

from notifications import tasks as app_tasks
from offload import Skip, relay
from offload.backends import LedgerBackend
from offload.models import Effect
from tests.factories import make_user

pytestmark = [pytest.mark.django_db, pytest.mark.ledger]


@task
def add(a: int, b: int) -> int:
    return a + b


@task(takes_context=True)
def which_attempt(context, tag: str) -> dict:
    return {"attempt": context.attempt, "id": context.task_result.id, "tag": tag}


@task
async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@task(max_attempts=2)
def flaky() -> None:
    raise RuntimeError("the database at postgres://app:hunter2@db/app said no")


@task
def refuses(value: str) -> None:
    raise ValueError(f"not a valid value: {value}")


@task
def returns_a_set() -> set:
    return {1}


@task
def gone() -> None:
    raise Skip("the order was cancelled")


@task(coalesce=True)
def recount(shop: str) -> None:
    pass


@task(permanent_errors=())
def parses(text: str) -> None:
    raise ValueError(f"could not parse {text!r} (the upstream answered a 502 page)")


def work(result) -> str:
    """What a worker does with the message of ``result``: run its Celery task on its id."""
    return current_app.tasks[result.task.module_path](int(result.id))


@pytest.fixture
def signals():
    """The status of every result each of Django's three task signals carried."""
    seen: dict[str, list[str]] = {"enqueued": [], "started": [], "finished": []}
    signals = {"enqueued": task_enqueued, "started": task_started, "finished": task_finished}
    for name, signal in signals.items():
        signal.connect(
            lambda sender, task_result, name=name, **kw: seen[name].append(task_result.status),
            weak=False,
            dispatch_uid=f"test.{name}",
        )
    yield seen
    for name, signal in signals.items():
        signal.disconnect(dispatch_uid=f"test.{name}")


def test_it_is_the_backend_the_project_configures():
    assert isinstance(task_backends["default"], LedgerBackend)
    assert default_task_backend.supports_defer and default_task_backend.supports_async_task
    assert default_task_backend.supports_get_result
    assert not default_task_backend.supports_priority


def test_enqueue_records_in_the_callers_transaction_and_publishes_only_after_the_commit(
    broker, signals, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        result = add.enqueue(2, b=3)
        effect = Effect.objects.get(pk=int(result.id))
        assert broker.llen("records") == 0, "published before the commit"
        assert signals["enqueued"] == [], "announced before the commit"
    assert result.status == TaskResultStatus.READY and not result.is_finished
    assert (result.args, result.kwargs) == ([2], {"b": 3})
    assert result.enqueued_at == effect.created_at and result.started_at is None
    assert result.backend == "default" and result.worker_ids == [] and result.errors == []
    assert effect.task == "tests.test_tasks_backend.add"
    assert effect.args == {"args": [2], "kwargs": {"b": 3}}
    assert signals["enqueued"] == [TaskResultStatus.READY]
    # Only the id travels: the arguments stay in the ledger.
    [raw] = broker.lrange("records", 0, -1)
    message = json.loads(raw)
    assert message["headers"]["task"] == "tests.test_tasks_backend.add"
    assert message["headers"]["argsrepr"] == f"({effect.pk},)"


def test_a_rolled_back_enqueue_leaves_nothing(broker, signals, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        add.enqueue(1, 1)
        transaction.set_rollback(True)
    assert not Effect.objects.exists()
    assert broker.llen("records") == 0 and signals["enqueued"] == []


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: task(lambda: None), "module level"),
        (lambda: add.using(priority=1), "priority"),
        (lambda: add.using(queue_name="nowhere"), "Queue 'nowhere' is not valid"),
        (lambda: add.using(run_after=datetime(2030, 1, 1)), "aware datetime"),
        (lambda: task(takes_context=True)(add.func), "first argument of 'context'"),
    ],
)
def test_a_task_django_would_refuse_is_refused(make, error):
    with pytest.raises(InvalidTask, match=error):
        make()


@pytest.mark.parametrize(
    "args, error",
    [
        ((datetime(2030, 1, 1),), TypeError),
        (({1: "a"},), ValueError),  # its key would come back as "1"
        ((math.nan,), ValueError),  # not JSON; PostgreSQL's jsonb refuses it
        ((object(),), TypeError),
    ],
)
def test_arguments_that_do_not_round_trip_through_json_are_refused_and_nothing_is_recorded(
    args, error
):
    with pytest.raises(error):
        add.enqueue(*args)
    assert not Effect.objects.exists()


def test_arguments_are_stored_as_json_gives_them_back():
    result = add.enqueue((1, 2), b=b"x")
    assert (result.args, result.kwargs) == ([[1, 2]], {"b": "x"})
    assert Effect.objects.get().args == {"args": [[1, 2]], "kwargs": {"b": "x"}}


def test_a_task_runs_to_successful_with_its_return_value_and_the_signals(signals):
    result = add.enqueue(2, 3)
    assert work(result) == "done"
    assert signals["started"] == [TaskResultStatus.RUNNING]
    assert signals["finished"] == [TaskResultStatus.SUCCESSFUL]

    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.is_finished
    assert result.return_value == 5
    assert result.attempts == 1 and len(result.worker_ids) == 1
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    assert add.get_result(result.id).return_value == 5
    assert async_to_sync(add.aget_result)(result.id).return_value == 5
    assert work(result) == "ignored", "a repeated message runs nothing"


def test_a_task_that_takes_its_context_is_told_its_attempt_and_result():
    result = which_attempt.enqueue("x")
    work(result)
    assert which_attempt.get_result(result.id).return_value == {
        "attempt": 1, "id": result.id, "tag": "x"
    }  # fmt: skip


def test_an_async_task_runs():
    result = double.enqueue(21)
    assert work(result) == "done"
    assert double.get_result(result.id).return_value == 42


def test_a_failing_task_is_ready_again_until_its_last_attempt_then_failed(signals, caplog):
    result = flaky.enqueue()
    assert work(result) == "retry"  # @task(max_attempts=2) wins over the backend's OPTIONS
    result.refresh()
    assert result.status == TaskResultStatus.READY and len(result.errors) == 1
    assert signals["finished"] == [], "finished only when it is"

    Effect.objects.filter(pk=int(result.id)).update(retry_at=timezone.now())  # its retry is due
    django_tasks_log = logging.getLogger("django.tasks")  # Django's receivers log here
    django_tasks_log.addHandler(caplog.handler)  # "django" does not propagate to the root
    try:
        assert work(result) == "dead"
    finally:
        django_tasks_log.removeHandler(caplog.handler)
    assert f"Task id={result.id} path=tests.test_tasks_backend.flaky state=FAILED" in caplog.text
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.attempts == 2
    assert signals["finished"] == [TaskResultStatus.FAILED]
    assert [e.exception_class for e in result.errors] == [RuntimeError, RuntimeError]
    assert "Traceback (most recent call last)" in result.errors[-1].traceback
    # An error that quotes a URL keeps its password out of the ledger.
    assert "hunter2" not in json.dumps(Effect.objects.values("errors", "last_error")[0])
    assert "hunter2" not in caplog.text
    assert "postgres://app:***@db/app" in result.errors[-1].traceback
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018 - Django's API raises for a failed task


def test_an_error_no_attempt_can_fix_fails_at_once():
    result = refuses.enqueue("x")
    assert work(result) == "dead"
    failed = refuses.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED and failed.attempts == 1
    assert failed.errors[0].exception_class_path == "builtins.ValueError"


def test_a_return_value_that_is_not_json_fails_the_task():
    result = returns_a_set.enqueue()
    assert work(result) == "dead"
    failed = returns_a_set.get_result(result.id)
    assert failed.errors[0].exception_class is TypeError


def test_a_task_that_skips_is_failed_with_the_reason():
    result = gone.enqueue()
    assert work(result) == "skipped"
    failed = gone.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert [(e.exception_class, e.traceback) for e in failed.errors] == [
        (Skip, "the order was cancelled")
    ]


def test_a_task_to_run_after_a_time_waits_in_the_ledger_until_then(broker):
    due = timezone.now() + timedelta(minutes=5)
    result = add.using(run_after=due).enqueue(1, 2)
    effect = Effect.objects.get(pk=int(result.id))
    assert (effect.retry_at, effect.published_at) == (due, None)
    assert broker.llen("records") == 0, "not in the broker: nothing to lose on a restart"
    assert work(result) == "ignored", "a message before its time runs nothing"

    now = timezone.now()
    assert not relay.due_for_relay(now, set(), set(), set()).filter(pk=effect.pk).exists()
    later = due + timedelta(seconds=1)
    assert relay.due_for_relay(later, set(), set(), set()).filter(pk=effect.pk).exists()
    Effect.objects.filter(pk=effect.pk).update(retry_at=now)  # its time has come
    assert work(result) == "done"


def test_a_run_after_already_past_is_published_at_once(broker):
    result = add.using(run_after=timezone.now() - timedelta(hours=1)).enqueue(1, 1)
    effect = Effect.objects.get(pk=int(result.id))
    assert effect.published_at is not None and effect.retry_at is None
    assert work(result) == "done"


def test_coalescing_tasks_fold_a_second_request_into_the_pending_one(signals):
    first, second = recount.enqueue("s"), recount.enqueue("s")
    other = recount.enqueue("t")
    assert first.id == second.id != other.id
    # A deferred request never folds into one that would run before its time, nor the
    # other way round.
    later = recount.using(run_after=timezone.now() + timedelta(hours=1)).enqueue("s")
    assert later.id != first.id
    assert recount.enqueue("u").id != later.id


def test_a_tasks_own_retry_policy_wins_over_the_backends_options():
    backend = LedgerBackend("default", {"OPTIONS": {"MAX_ATTEMPTS": 3, "BACKOFF": 7}})
    assert backend.celery_options(flaky) == {
        "max_attempts": 2, "backoff": 7, "user_arg": None, "atomic": False, "coalesce": False
    }  # fmt: skip
    celery_task = current_app.tasks[flaky.module_path]
    assert celery_task.max_attempts == 2 and celery_task.backoff is None  # no OPTIONS here


@pytest.mark.parametrize(
    "options, error",
    [
        ({"RETRIES": 3}, "no RETRIES"),
        ({"MAX_ATTEMPTS": "5"}, "MAX_ATTEMPTS must be a whole number"),
        ({"BACKOFF": 0}, "BACKOFF must be a whole number of at least 1"),
    ],
)
def test_options_the_backend_does_not_take_are_refused(options, error):
    with pytest.raises(InvalidTaskBackend, match=error):
        LedgerBackend("default", {"OPTIONS": options})


def test_a_task_can_say_which_errors_are_worth_another_attempt():
    result = parses.enqueue("<html>")
    assert work(result) == "retry"  # a ValueError, which by default dead-letters at once


def test_a_result_is_found_only_for_a_task_of_this_backend():
    with pytest.raises(TaskResultDoesNotExist):
        add.get_result("123456")
    with pytest.raises(TaskResultDoesNotExist):
        add.get_result("not-an-id")
    user = make_user()
    reset = app_tasks.send_password_reset_email.offload(user_id=user.pk)  # a Celery task's
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(str(reset.pk))
    welcome = Effect.objects.get(user=user, task="notifications.tasks.send_welcome_email")
    with pytest.raises(TaskResultMismatch):
        add.get_result(str(welcome.pk))
    assert app_tasks.send_welcome_email.get_result(str(welcome.pk)).kwargs == {"user_id": user.pk}


def test_the_apps_welcome_email_is_a_django_task_that_concerns_its_user(mailoutbox):
    user = make_user("ada")
    welcome = Effect.objects.get(user=user, task="notifications.tasks.send_welcome_email")
    assert welcome.description == "Welcome email"
    result = app_tasks.send_welcome_email.get_result(str(welcome.pk))
    assert work(result) == "done"
    assert app_tasks.send_welcome_email.get_result(result.id).status == "SUCCESSFUL"
    assert [m.to for m in mailoutbox] == [["ada@example.com"]]
