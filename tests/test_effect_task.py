"""The effect task base: claim, settle, ignore repeats, skip what has gone, retry transient
errors, bury permanent ones.

Tasks are called as functions here (no broker, no worker); the whole path with a real worker is
in test_integration.py.
"""

import logging
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from celery import current_app, shared_task
from django.core import mail
from django.core.mail import EmailMessage
from django.db.models import F
from django.utils import timezone

from notifications import tasks
from notifications.models import Document, Profile
from offload import EffectTask, Skip, ledger
from offload.conf import conf
from offload.lease import LeaseLost, current_lease, heartbeat
from offload.mail import send
from offload.models import Effect
from tests.factories import WELCOME_TASK, make_user

pytestmark = [pytest.mark.django_db, pytest.mark.ledger]


def run_welcome(effect_id):
    """The welcome email's Celery task (a django.tasks task run by offload), as a worker calls
    it with a message's effect id."""
    return current_app.tasks[WELCOME_TASK](effect_id)


def now() -> str:
    return timezone.now().isoformat()


def test_an_effect_runs_once_and_a_repeated_message_is_a_no_op():
    user = make_user()
    [effect] = Effect.objects.filter(task=WELCOME_TASK)

    assert run_welcome(effect.pk) == "done"
    assert run_welcome(effect.pk) == "ignored"

    effect.refresh_from_db()
    assert (effect.status, effect.attempts) == (Effect.Status.DONE, 1)
    assert effect.started_at <= effect.finished_at
    assert [m.to for m in mail.outbox] == [[user.email]]


def test_an_attempt_logs_one_info_line_at_its_end_and_its_start_only_at_debug(caplog):
    make_user()
    [effect] = Effect.objects.filter(task=WELCOME_TASK)

    def steps(level):
        return [
            r.step for r in caplog.records
            if r.name == "offload.base" and r.effect == effect.pk and r.levelno >= level
        ]  # fmt: skip

    with caplog.at_level(logging.DEBUG, logger="offload.base"):
        assert run_welcome(effect.pk) == "done"
    assert steps(logging.DEBUG) == ["started", "done"]
    assert steps(logging.INFO) == ["done"]


def test_a_message_that_is_not_an_effect_id_runs_nothing():
    make_user()
    for junk in ("1", 1.0, None, [1], {"id": 1}):
        assert run_welcome(junk) == "rejected"
    assert run_welcome(10**12) == "ignored"
    assert mail.outbox == []


def test_a_message_naming_another_tasks_effect_runs_nothing():
    """Found by the fault tests: a stale refresh message claimed a welcome email's effect
    (both take user_id), ran the recount and marked it done; the email was never sent."""
    user = make_user()
    [welcome] = Effect.objects.filter(task=WELCOME_TASK)
    assert tasks.refresh_profile_counters(welcome.pk) == "ignored"
    welcome.refresh_from_db()
    assert (welcome.status, welcome.attempts) == (Effect.Status.PENDING, 0)
    assert run_welcome(welcome.pk) == "done"
    assert [m.to for m in mail.outbox] == [[user.email]]


def test_work_whose_subject_has_gone_ends_skipped_with_its_reason(caplog):
    owner = make_user()
    document = Document.objects.create(owner=owner, title="t", file="documents/t.txt")
    effect = tasks.send_share_email.offload(
        document_id=document.pk, recipient="friend@example.com", shared_by_id=owner.pk
    )
    document.delete()

    assert tasks.send_share_email(effect.pk) == "skipped"
    effect.refresh_from_db()
    assert (effect.status, effect.attempts) == (Effect.Status.SKIPPED, 1)
    assert effect.reason == "the document was deleted before the email was sent"
    assert effect.finished_at and effect.display_status == "skipped"
    assert mail.outbox == []
    [line] = [r.getMessage() for r in caplog.records if "step=skipped" in r.getMessage()]
    assert line.endswith("reason='the document was deleted before the email was sent'")
    assert tasks.send_share_email(effect.pk) == "ignored", "an ended effect is not run again"


def test_a_skipped_atomic_effect_keeps_none_of_its_writes():
    user = make_user()
    effect = skipping_recount.offload(user_id=user.pk)
    assert skipping_recount(effect.pk) == "skipped"
    assert not Profile.objects.filter(user=user).exists()


@shared_task(base=EffectTask, name="tests.skipping_recount", atomic=True)
def skipping_recount(user_id: int) -> None:
    Profile.objects.create(user_id=user_id, document_count=99)
    raise Skip("decided after a write")


def test_a_permanent_error_dead_letters_at_once():
    effect = tasks.delete_stored_file.offload(name="../../etc/passwd")
    assert tasks.delete_stored_file(effect.pk) == "dead"
    effect.refresh_from_db()
    assert (effect.status, effect.attempts) == (Effect.Status.DEAD, 1)
    assert effect.last_error.startswith("SuspiciousFileOperation")


def test_arguments_that_do_not_fit_the_task_dead_letter():
    effect = tasks.refresh_profile_counters.offload(user_id=make_user().pk, unexpected="x")
    assert tasks.refresh_profile_counters(effect.pk) == "dead"
    assert Effect.objects.get(pk=effect.pk).last_error.startswith("TypeError")


@pytest.fixture
def smtp_refusing(settings):
    """An SMTP server that is not there: a transient failure of the real SMTP backend."""
    from devtools.localredis import free_port

    settings.MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": free_port(), "timeout": 2},
        }
    }


def test_a_transient_error_sends_the_effect_back_to_pending_until_its_retry_time(
    smtp_refusing, settings
):
    make_user()
    [effect] = Effect.objects.filter(task=WELCOME_TASK)
    before = timezone.now()
    assert run_welcome(effect.pk) == "retry"
    effect.refresh_from_db()
    assert (effect.status, effect.attempts) == (Effect.Status.PENDING, 1)
    assert effect.last_error.startswith("ConnectionRefusedError")
    # Full jitter over EFFECT_RETRY_BACKOFF * 2**0 s; the relay publishes it when it is due.
    backoff = timedelta(seconds=settings.EFFECT_RETRY_BACKOFF)
    assert before <= effect.retry_at <= timezone.now() + backoff
    assert effect.published_at is None

    Effect.objects.filter(pk=effect.pk).update(retry_at=timezone.now() + timedelta(minutes=1))
    assert run_welcome(effect.pk) == "ignored", "a stray message before its time"
    Effect.objects.filter(pk=effect.pk).update(retry_at=timezone.now())
    assert run_welcome(effect.pk) == "retry"
    assert Effect.objects.get(pk=effect.pk).attempts == 2


def test_the_last_attempt_dead_letters_instead_of_retrying(smtp_refusing, settings):
    make_user()
    [effect] = Effect.objects.filter(task=WELCOME_TASK)
    Effect.objects.filter(pk=effect.pk).update(attempts=settings.EFFECT_MAX_ATTEMPTS - 1)
    assert run_welcome(effect.pk) == "dead"
    effect.refresh_from_db()
    assert (effect.status, effect.attempts) == (Effect.Status.DEAD, settings.EFFECT_MAX_ATTEMPTS)


def test_a_live_attempt_is_not_taken_over_but_an_expired_one_is(settings):
    make_user()
    [effect] = Effect.objects.filter(task=WELCOME_TASK)
    Effect.objects.filter(pk=effect.pk).update(
        status=Effect.Status.RUNNING,
        attempts=1,
        started_at=timezone.now(),
        leased_until=timezone.now() + conf.lease,
    )
    assert run_welcome(effect.pk) == "ignored"

    expired = timezone.now() - timedelta(seconds=1)
    Effect.objects.filter(pk=effect.pk).update(leased_until=expired)
    assert run_welcome(effect.pk) == "done"
    assert Effect.objects.get(pk=effect.pk).attempts == 2
    assert len(mail.outbox) == 1


def test_a_database_effect_that_fails_halfway_leaves_no_partial_write():
    user = make_user()
    effect = tasks.record_login.offload(user_id=user.pk, ip="10.0.0.1", user_agent="x", at="bad")
    # The profile row is created before the bad time is parsed: the whole attempt rolls back.
    assert tasks.record_login(effect.pk) == "dead"
    assert Effect.objects.get(pk=effect.pk).last_error.startswith("ValueError")
    assert not Profile.objects.filter(user=user).exists()
    assert user.login_activity.count() == 0


def test_a_stale_attempt_cannot_settle_an_effect_another_attempt_holds():
    make_user()
    [effect] = Effect.objects.filter(task=WELCOME_TASK)
    stale = ledger.claim(effect.pk, WELCOME_TASK)
    # Its worker stalls past the lease; another attempt takes the effect over.
    expired = timezone.now() - timedelta(seconds=1)
    Effect.objects.filter(pk=effect.pk).update(leased_until=expired)
    current = ledger.claim(effect.pk, WELCOME_TASK)
    assert (stale.attempt, current.attempt) == (1, 2)

    held_until = Effect.objects.get(pk=effect.pk).leased_until
    assert not ledger.renew(stale)
    assert not ledger.complete(stale)
    late = ledger.Failure.of(RuntimeError("late"))
    assert not ledger.release(stale, late, retry_at=timezone.now())
    assert not ledger.bury(stale, late)
    row = Effect.objects.get(pk=effect.pk)
    assert (row.status, row.attempts, row.last_error) == (Effect.Status.RUNNING, 2, "")
    assert row.leased_until == held_until

    assert ledger.renew(current)
    assert Effect.objects.get(pk=effect.pk).leased_until > held_until

    assert ledger.complete(current)
    assert Effect.objects.get(pk=effect.pk).status == Effect.Status.DONE


@shared_task(base=EffectTask, name="tests.overtaken_write", atomic=True)
def overtaken_write(user_id: int) -> None:
    """A database effect during which another attempt takes its effect over (a worker that
    stalled past its lease): its write must not survive."""
    Profile.objects.create(user_id=user_id, login_count=99)
    Effect.objects.filter(task="tests.overtaken_write").update(attempts=F("attempts") + 1)


def test_a_database_effect_that_lost_its_lease_rolls_back():
    user = make_user()
    effect = overtaken_write.offload(user_id=user.pk)
    assert overtaken_write(effect.pk) == "lost"
    assert not Profile.objects.filter(user=user).exists()
    assert Effect.objects.get(pk=effect.pk).status == Effect.Status.RUNNING


def test_a_sign_in_from_a_new_device_offloads_the_email_for_the_same_user():
    user = make_user()
    for ip in ("10.0.0.1", "203.0.113.7"):
        effect = tasks.record_login.offload(user_id=user.pk, ip=ip, user_agent="x", at=now())
        assert tasks.record_login(effect.pk) == "done"
    [email] = Effect.objects.filter(task="send_new_sign_in_email")
    new_login = user.login_activity.get(ip="203.0.113.7")
    assert email.args == {"login_id": new_login.pk}
    assert email.user_id == user.pk, "a follow-up concerns its parent's user"


def test_the_failure_that_crosses_the_threshold_offloads_one_alert(settings):
    user = make_user()
    for _ in range(settings.FAILED_LOGIN_ALERT_THRESHOLD + 1):
        effect = tasks.record_failed_login.offload(
            username_hash="ab" * 32, ip="10.0.0.9", at=now(), user_id=user.pk
        )
        assert tasks.record_failed_login(effect.pk) == "done"
    [alert] = Effect.objects.filter(task="send_failed_login_alert")
    assert alert.user_id == user.pk
    assert alert.args == {"failed_login_id": user.failed_logins.get(alerted=True).pk}


def test_an_email_has_a_message_id_fixed_by_its_effect():
    make_user()
    [effect] = Effect.objects.filter(task=WELCOME_TASK)
    assert run_welcome(effect.pk) == "done"
    Effect.objects.filter(pk=effect.pk).update(status=Effect.Status.PENDING)  # a repeat
    assert run_welcome(effect.pk) == "done"
    first, repeat = (m.extra_headers["Message-ID"] for m in mail.outbox)
    assert first == repeat
    assert first.startswith(f"<effect-{effect.pk}.") and first.endswith("@example.com>")


@shared_task(base=EffectTask, name="tests.overtaken_email")
def overtaken_email(user_id: int) -> None:
    """An email effect that stalls past its lease before sending: meanwhile another attempt
    takes the effect over, and the heartbeat's next renewal finds it gone."""
    Effect.objects.filter(task="tests.overtaken_email").update(attempts=F("attempts") + 1)
    heartbeat.renew(current_lease.get())  # the heartbeat thread's next tick, run here
    send(EmailMessage("Hello", "Hello", to=["x@example.com"]))


def test_an_attempt_that_lost_its_lease_stops_before_sending_its_email():
    effect = overtaken_email.offload(user_id=make_user().pk)
    assert overtaken_email(effect.pk) == "lost"
    assert mail.outbox == []
    assert Effect.objects.get(pk=effect.pk).attempts == 2, "the other attempt's, untouched"


def test_a_lease_that_could_not_be_renewed_in_time_is_not_trusted():
    make_user()
    [effect] = Effect.objects.filter(task=WELCOME_TASK)
    with heartbeat.hold(ledger.claim(effect.pk, WELCOME_TASK), 60) as lease:
        lease.check()  # fresh: held
        lease.holds_until = time.monotonic()  # the database did not answer the renewals
        with pytest.raises(LeaseLost):
            lease.check()


@pytest.mark.django_db(transaction=True)  # the failed claim closes the connection
def test_a_claim_the_database_cannot_answer_sends_the_message_back_after_a_growing_pause(
    monkeypatch,
):
    """Not acknowledged and stranded: Reject(requeue) hands the message to the broker again.
    A process whose claims keep failing waits longer each time (1, 2, 4, 5, 5 s), so it stops
    taking messages that workers reaching the database would run; a success resets it."""
    from celery.exceptions import Reject
    from django.db import OperationalError

    from offload import base

    make_user()
    [effect] = Effect.objects.filter(task=WELCOME_TASK)
    pauses: list[float] = []
    # Only offload.base's view of the time module: the heartbeat thread sleeps on the real one.
    monkeypatch.setattr(
        base, "time", SimpleNamespace(sleep=pauses.append, monotonic=time.monotonic,
                                      perf_counter=time.perf_counter),
    )  # fmt: skip
    real_claim = ledger.claim

    def unreachable(*args):
        raise OperationalError("connection timeout expired")

    monkeypatch.setattr(ledger, "claim", unreachable)
    for _ in range(5):
        with pytest.raises(Reject) as rejected:
            run_welcome(effect.pk)
        assert rejected.value.requeue is True
    assert pauses == [1, 2, 4, 5, 5]

    monkeypatch.setattr(ledger, "claim", real_claim)
    assert run_welcome(effect.pk) == "done"
    monkeypatch.setattr(ledger, "claim", unreachable)
    with pytest.raises(Reject):
        run_welcome(effect.pk)
    assert pauses[-1] == 1, "the pause starts over after a claim succeeded"
    assert Effect.objects.get(pk=effect.pk).attempts == 1, "no attempt counted for a requeue"


@shared_task(base=EffectTask, name="tests.interrupted_query")
def interrupted_query(user_id: int) -> None:
    """The soft time limit arrives while a query waits on the server (Celery raises it from a
    signal handler, wherever the process is)."""
    from celery.exceptions import SoftTimeLimitExceeded

    Profile.objects.filter(user_id=user_id).count()
    raise SoftTimeLimitExceeded()


@pytest.mark.django_db(transaction=True)  # the attempt closes the connection
def test_an_attempt_ended_by_its_soft_time_limit_closes_its_connection_and_is_retried():
    """The soft time limit can strike inside a query, and a connection a query was interrupted
    on would answer the next effect of this process with "another command is already in
    progress": after one, the connection is closed, and the retry is recorded on a new one."""
    from django.db import connection

    effect = interrupted_query.offload(user_id=make_user().pk)
    used = connection.connection
    assert interrupted_query(effect.pk) == "retry"
    assert connection.connection is not used, "the interrupted connection was not reused"
    assert Effect.objects.get(pk=effect.pk).status == "pending"
