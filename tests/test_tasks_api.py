"""Django's Tasks API on offload's backend, in a project that knows nothing of this one.

tests/tasksapi/ is a Django project of its own: settings with TASKS (offload.backends.
LedgerBackend, two attempts), one model (Order), one ``@task`` (process_order) and one
``@receiver`` that enqueues it when an order is created. Its shells and real Celery workers run
as subprocesses on the session's Redis; this process reads its SQLite file and asks its shell
for the ``TaskResult``, as a user of the API would.
"""

import json
import os
import textwrap

import pytest
import redis
from django.conf import settings

from devtools.processes import wait_for
from tests import subprojects

QUEUE = "tasksapi"  # its CELERY_TASK_DEFAULT_QUEUE

# Prints the TaskResult of effect RESULT_ID as JSON, read by process_order.get_result().
RESULT = textwrap.dedent(
    """
    import json
    from tests.tasksapi.tasks import process_order

    result = process_order.get_result("{result_id}")
    result.refresh()  # reads the ledger again, as get_result did
    print(json.dumps({{
        "status": result.status,
        "return_value": result.return_value if result.status == "SUCCESSFUL" else None,
        "errors": [[e.exception_class_path, e.traceback] for e in result.errors],
        "worker_ids": result.worker_ids,
        "attempts": result.attempts,
        "enqueued_at": result.enqueued_at.isoformat(),
        "started_at": result.started_at and result.started_at.isoformat(),
        "finished_at": result.finished_at and result.finished_at.isoformat(),
        "last_attempted_at": result.last_attempted_at and result.last_attempted_at.isoformat(),
        "kwargs": result.kwargs,
        "is_finished": result.is_finished,
    }}))
    """
)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """The project's environment, with its database migrated."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.tasksapi.settings",
        "TASKSAPI_DATABASE": str(tmp_path_factory.mktemp("tasksapi") / "db.sqlite3"),
        "REDIS_URL": settings.CELERY_BROKER_URL,  # the session's private Redis
        "PYTHONUNBUFFERED": "1",
    }
    subprojects.django(env, "migrate", "--run-syncdb", "--noinput")
    return env


@pytest.fixture
def broker():
    """The project's queue, empty before and after: no other test's worker reads it."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(QUEUE)
    yield client
    client.delete(QUEUE)
    client.close()


@pytest.fixture
def worker(project, broker, tmp_path):
    service = subprojects.start_worker("tests.tasksapi", project, tmp_path / "a.log", QUEUE, "a")
    yield service
    service.stop()


def shell(env: dict, code: str) -> dict:
    """Run ``code`` in the project's shell; the JSON object it printed last."""
    output = subprojects.django(env, "shell", "-c", textwrap.dedent(code))
    return json.loads(output.strip().splitlines()[-1])


def create_order(env: dict, kind: str) -> tuple[int, int]:
    """Create an order in the project's shell (its receiver enqueues process_order); the
    order's id and its effect's."""
    code = f"""
        import json
        from tests.tasksapi.models import Order
        print(json.dumps({{"order": Order.objects.create(kind={kind!r}).pk}}))
    """
    order = shell(env, code)["order"]
    [(effect,)] = subprojects.query(
        env["TASKSAPI_DATABASE"],
        "SELECT id FROM workers_effect WHERE json_extract(args, '$.kwargs.order_id') = ?",
        order,
    )
    return order, effect


def task_result(env: dict, result_id: int) -> dict:
    return shell(env, RESULT.format(result_id=result_id))


def ledger_status(env: dict, effect_id: int) -> str:
    [(status,)] = subprojects.query(
        env["TASKSAPI_DATABASE"], "SELECT status FROM workers_effect WHERE id = ?", effect_id
    )
    return status


def runs(env: dict, order_id: int) -> int:
    [(count,)] = subprojects.query(
        env["TASKSAPI_DATABASE"], "SELECT runs FROM tasksapi_order WHERE id = ?", order_id
    )
    return count


def wait_until(env: dict, effect_id: int, status: str, worker, timeout: float = 30) -> None:
    wait_for(
        lambda: ledger_status(env, effect_id) == status,
        timeout=timeout,
        what=f"effect {effect_id} to be {status}",
        diagnose=lambda: f"{ledger_status(env, effect_id)}; log:\n{worker.log()[-3000:]}",
    )


@pytest.mark.integration
def test_enqueued_in_a_transaction_it_runs_once_after_the_commit_and_never_after_a_rollback(
    project, broker, tmp_path
):
    created = shell(
        project,
        """
        import json
        from django.db import transaction
        from django.tasks.signals import task_enqueued
        from offload.models import Effect
        from tests.tasksapi.models import Order
        from tests.tasksapi.tasks import process_order

        enqueued = []
        task_enqueued.connect(
            lambda sender, task_result, **kw: enqueued.append(task_result.id), weak=False
        )
        effects_before = Effect.objects.count()
        with transaction.atomic():
            Order.objects.create(total=1)  # the receiver enqueues process_order
            transaction.set_rollback(True)
        with transaction.atomic():
            order = Order.objects.create(total=42)
            effect = Effect.objects.get(args__kwargs__order_id=order.pk)
            in_transaction = process_order.get_result(str(effect.pk)).status
            signalled_before_commit = list(enqueued)
        print(json.dumps({
            "order": order.pk, "effect": effect.pk, "in_transaction": in_transaction,
            "signalled_before_commit": signalled_before_commit, "signalled": enqueued,
            "rolled_back_orders": Order.objects.filter(total=1).count(),
            "new_effects": Effect.objects.count() - effects_before,
        }))
        """,
    )
    effect = created["effect"]
    # The rolled-back order took its effect with it; the other one is READY, announced by
    # task_enqueued only once its transaction committed, and published then.
    assert (created["rolled_back_orders"], created["new_effects"]) == (0, 1)
    assert created["in_transaction"] == "READY"
    assert created["signalled_before_commit"] == []
    assert created["signalled"] == [str(effect)]
    assert broker.llen(QUEUE) == 1

    worker = subprojects.start_worker("tests.tasksapi", project, tmp_path / "a.log", QUEUE, "a")
    try:
        wait_until(project, effect, "done", worker)
    finally:
        worker.stop()

    result = task_result(project, effect)
    assert result["status"] == "SUCCESSFUL" and result["is_finished"]
    assert result["return_value"] == {"order": created["order"], "total": 42}
    assert result["kwargs"] == {"order_id": created["order"]}
    assert result["errors"] == []
    assert result["attempts"] == 1 and result["worker_ids"][0].startswith("a-")
    assert result["enqueued_at"] <= result["started_at"] <= result["finished_at"]
    assert result["last_attempted_at"] == result["started_at"]
    assert runs(project, created["order"]) == 1


@pytest.mark.integration
def test_a_failing_task_is_failed_with_its_error_after_the_configured_attempts(project, worker):
    order, effect = create_order(project, "fail")
    wait_until(project, effect, "dead", worker)

    result = task_result(project, effect)
    assert result["status"] == "FAILED" and result["is_finished"]
    assert result["attempts"] == 2  # TASKS OPTIONS MAX_ATTEMPTS
    assert [path for path, _ in result["errors"]] == ["builtins.RuntimeError"] * 2
    trace = result["errors"][-1][1]
    assert "Traceback (most recent call last)" in trace
    assert "RuntimeError: the payment service said no" in trace
    assert runs(project, order) == 0


@pytest.mark.integration
def test_a_task_to_run_after_a_time_runs_no_earlier(project, worker):
    created = shell(
        project,
        """
        import json
        from datetime import timedelta
        from django.utils import timezone
        from tests.tasksapi.models import Order
        from tests.tasksapi.tasks import process_order

        [order] = Order.objects.bulk_create([Order(total=7)])  # no signal: enqueued below
        due = timezone.now() + timedelta(seconds=3)
        result = process_order.using(run_after=due).enqueue(order_id=order.pk)
        print(json.dumps({"effect": int(result.id), "order": order.pk, "due": due.isoformat(),
                          "status": result.status}))
        """,
    )
    effect = created["effect"]
    assert created["status"] == "READY"
    # Waiting in the ledger, not in the broker: nothing to lose if every process restarts.
    [(status, published_at)] = subprojects.query(
        project["TASKSAPI_DATABASE"],
        "SELECT status, published_at FROM workers_effect WHERE id = ?",
        effect,
    )
    assert (status, published_at) == ("pending", None)
    wait_until(project, effect, "done", worker)

    result = task_result(project, effect)
    assert result["status"] == "SUCCESSFUL"
    assert result["started_at"] >= created["due"]
    assert runs(project, created["order"]) == 1


@pytest.mark.integration
def test_a_task_whose_worker_is_sigkilled_finishes_on_another_worker(project, broker, tmp_path):
    first = subprojects.start_worker("tests.tasksapi", project, tmp_path / "a.log", QUEUE, "a")
    second = None
    try:
        order, effect = create_order(project, "slow")
        wait_until(project, effect, "running", first)
        first.kill()  # mid-task: no cleanup, no acknowledgement
        second = subprojects.start_worker("tests.tasksapi", project, tmp_path / "b.log", QUEUE, "b")
        # The lease (15 s by default) lapses; the second worker's relay publishes it again.
        wait_until(project, effect, "done", second, timeout=60)
    finally:
        first.stop()
        if second:
            second.stop()

    result = task_result(project, effect)
    assert result["status"] == "SUCCESSFUL"
    assert [worker.split("-")[0] for worker in result["worker_ids"]] == ["a", "b"]
    assert runs(project, order) == 1
