"""The relay (offload/relay.py), run as a function: what it publishes again, and what it leaves.

The relay thread in a real worker, with Redis emptied or a worker killed, is in test_faults.py.
"""

import base64
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from notifications import tasks
from offload import relay
from offload.conf import conf
from offload.models import Effect
from tests.factories import WELCOME_TASK, make_user

pytestmark = [pytest.mark.django_db, pytest.mark.ledger]


def age(effect, **fields):
    Effect.objects.filter(pk=effect.pk).update(**fields)


@pytest.fixture
def welcome() -> Effect:
    """The pending welcome email of a new user, whose publish failed (it cleared
    ``published_at``; here the publish after commit never ran)."""
    make_user()
    Effect.objects.update(published_at=None)
    return Effect.objects.get(task=WELCOME_TASK)


def test_it_publishes_what_the_broker_never_had_after_the_grace(broker, welcome):
    assert relay.relay() == 0, "still inside the grace period"

    age(welcome, created_at=timezone.now() - conf.relay_grace - timedelta(seconds=1))
    assert relay.relay() == 1
    assert broker.effect_ids("emails") == [welcome.pk]
    welcome.refresh_from_db()
    assert welcome.published_at is not None
    assert relay.relay() == 0, "published once, not on every run"


def test_it_publishes_a_retry_when_its_time_comes(broker, welcome):
    long_ago = timezone.now() - timedelta(hours=1)
    later = timezone.now() + timedelta(seconds=30)
    age(welcome, created_at=long_ago, attempts=1, retry_at=later, published_at=None)
    assert relay.relay() == 0, "not before its retry time"

    age(welcome, retry_at=timezone.now())
    assert relay.relay() == 1
    assert broker.effect_ids("emails") == [welcome.pk]


def test_it_publishes_once_an_attempt_whose_lease_ran_out(broker, welcome):
    started = timezone.now() - timedelta(minutes=1)
    age(
        welcome,
        status="running",
        attempts=1,
        started_at=started,
        leased_until=timezone.now() - timedelta(seconds=1),
        published_at=started - timedelta(seconds=1),
    )
    assert relay.relay() == 1
    assert relay.relay() == 0, "once per lost lease"
    assert broker.effect_ids("emails") == [welcome.pk]


def test_it_publishes_again_what_the_broker_lost_when_its_queue_is_empty(broker, welcome):
    long_ago = timezone.now() - conf.republish_after - timedelta(seconds=1)
    age(welcome, created_at=long_ago, published_at=long_ago)
    assert relay.relay() == 1
    assert broker.effect_ids("emails") == [welcome.pk]


def test_it_publishes_an_effect_whose_process_died_before_its_publish(broker):
    """offload() records the row with published_at set, for the publish that follows the
    commit; a process killed in between never sends it, and the relay finds it as lost."""
    make_user()
    effect = Effect.objects.get(task=WELCOME_TASK)
    assert effect.published_at == effect.created_at
    assert relay.relay() == 0, "not before EFFECT_REPUBLISH_AFTER"

    long_ago = timezone.now() - conf.republish_after - timedelta(seconds=1)
    age(effect, created_at=long_ago, published_at=long_ago)
    assert relay.relay() == 1
    assert broker.effect_ids("emails") == [effect.pk]


def test_an_effect_on_a_queue_of_its_own_is_published_again_there(broker, welcome):
    """A django.tasks task's queue_name names its queue, which Celery need not declare."""
    long_ago = timezone.now() - conf.republish_after - timedelta(seconds=1)
    age(welcome, created_at=long_ago, published_at=long_ago, queue="urgent")
    try:
        broker.lpush("urgent", b"a message ahead of it")
        assert relay.relay() == 0, "a backlog on its own queue"
        broker.delete("urgent")
        assert relay.relay() == 1, "lost from its own queue"
        assert broker.effect_ids("urgent") == [welcome.pk] and broker.llen("emails") == 0
    finally:
        broker.delete("urgent")


def test_a_backlog_is_never_published_again(broker, welcome):
    """An effect waiting behind others in its queue looks old, but its message is there."""
    long_ago = timezone.now() - conf.republish_after - timedelta(seconds=1)
    age(welcome, created_at=long_ago, published_at=long_ago)
    broker.lpush("emails", b"a message ahead of it")
    assert relay.relay() == 0
    assert broker.llen("emails") == 1


def test_it_leaves_live_and_finished_effects_alone(broker, welcome):
    long_ago = timezone.now() - timedelta(days=1)
    for status in ("running", "done", "dead"):
        age(
            welcome,
            status=status,
            started_at=timezone.now(),
            leased_until=timezone.now() + conf.lease,
            created_at=long_ago,
            published_at=long_ago,
        )
        assert relay.relay() == 0, status
    assert broker.effect_ids("emails") == []


def test_an_effect_of_a_task_it_does_not_know_waits_for_a_worker_that_does(broker):
    """Mid-deploy, the relaying worker may run the version before the task was added."""
    Effect.objects.create(task="a_newer_task", created_at=timezone.now() - timedelta(hours=1))
    assert relay.relay() == 0
    assert Effect.objects.get().status == "pending"


def test_when_the_broker_lost_its_data_it_publishes_every_pending_effect_at_once(broker):
    users = [make_user() for _ in range(3)]
    fresh, published, waiting = Effect.objects.filter(user__in=users).order_by("pk")
    age(published, published_at=timezone.now())  # its message was in the Redis that was lost
    age(waiting, attempts=1, retry_at=timezone.now() + timedelta(minutes=1))
    done = tasks.refresh_profile_counters.offload(user_id=users[0].pk)
    age(done, status="done")

    # Redis restarted empty, flushed, or failed over to an empty replica: the marker is gone
    # (with everything else; here only the marker, as this may be a Redis of yours).
    broker.delete(relay.marker_key())
    assert relay.relay() == 2
    assert sorted(broker.effect_ids("emails")) == [fresh.pk, published.pk]
    assert broker.get(relay.marker_key()), "the marker is back"
    assert relay.relay() == 0, "once"


def test_a_republish_cut_short_is_finished_by_the_next_run(broker, monkeypatch):
    for _ in range(3):
        make_user()
    ids = sorted(Effect.objects.values_list("pk", flat=True))
    broker.delete(relay.marker_key())
    monkeypatch.setattr(relay, "BATCH", 1)
    pushed = []

    def push_failing_the_second(effects):  # the broker failing again, briefly
        pushed.append(effects)
        if len(pushed) == 2:
            raise ConnectionError("Connection refused")
        real_push(effects)

    real_push = relay.messages.push
    monkeypatch.setattr(relay.messages, "push", push_failing_the_second)
    assert relay.relay() == 1
    assert not broker.exists(relay.marker_key()), "not marked before all was published"
    monkeypatch.setattr(relay.messages, "push", real_push)
    # Everything pending again, at once (not after the grace): the one published by the run
    # cut short gets a second, harmless copy.
    assert relay.relay() == 3
    assert sorted(set(broker.effect_ids("emails"))) == ids
    assert broker.exists(relay.marker_key())


def test_it_publishes_everything_due_in_one_run(broker, monkeypatch):
    monkeypatch.setattr(relay, "BATCH", 2)  # so that five effects need three batches
    for _ in range(5):
        make_user()
    Effect.objects.update(created_at=timezone.now() - timedelta(hours=1), published_at=None)
    assert relay.relay() == 5
    assert len(broker.effect_ids("emails")) == 5


def test_one_worker_at_a_time_relays(broker):
    first, second = relay.RelayThread(), relay.RelayThread()
    second.me = "another-host:1"
    assert first.leads(broker) and first.leads(broker)
    assert not second.leads(broker)
    broker.delete(relay.leader_key())  # the leader died: its lock lapses
    assert second.leads(broker) and not first.leads(broker)


def test_an_effect_a_worker_holds_unacknowledged_is_not_lost(broker, welcome):
    """Prefetched by a worker (live, or dead: the visibility timeout brings it back)."""
    long_ago = timezone.now() - conf.republish_after - timedelta(seconds=1)
    age(welcome, created_at=long_ago, published_at=long_ago)
    body = base64.b64encode(json.dumps([[welcome.pk], {}, {}]).encode()).decode()
    broker.hset("unacked", "a-delivery-tag", json.dumps([{"body": body}, "emails", "emails"]))
    try:
        assert relay.relay() == 0
    finally:
        broker.delete("unacked")
