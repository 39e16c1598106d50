"""The effect task base: claim, settle, skip repeats, retry transient errors, bury permanent ones.

Tasks are called as functions here (no broker, no worker); the whole path with a real worker is
in test_integration.py.
"""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from notifications import tasks
from notifications.models import Profile
from offload.conf import conf
from offload.models import Effect
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def test_an_effect_runs_once_and_a_repeated_message_is_a_no_op():
    user = make_user()
    [effect] = Effect.objects.filter(task="send_welcome_email")

    assert tasks.send_welcome_email(effect.pk) == "done"
    assert tasks.send_welcome_email(effect.pk) == "skipped"

    effect.refresh_from_db()
    assert (effect.status, effect.attempts) == (Effect.Status.DONE, 1)
    assert effect.started_at <= effect.finished_at
    assert [m.to for m in mail.outbox] == [[user.email]]


def test_a_message_that_is_not_an_effect_id_runs_nothing():
    make_user()
    for junk in ("1", 1.0, None, [1], {"id": 1}):
        assert tasks.send_welcome_email(junk) == "rejected"
    assert tasks.send_welcome_email(10**12) == "skipped"
    assert mail.outbox == []


def test_a_message_naming_another_tasks_effect_runs_nothing():
    """Found by the fault tests: a stale refresh message claimed a welcome email's effect
    (both take user_id), ran the recount and marked it done; the email was never sent."""
    user = make_user()
    [welcome] = Effect.objects.filter(task="send_welcome_email")
    assert tasks.refresh_profile_counters(welcome.pk) == "skipped"
    welcome.refresh_from_db()
    assert (welcome.status, welcome.attempts) == (Effect.Status.PENDING, 0)
    assert tasks.send_welcome_email(welcome.pk) == "done"
    assert [m.to for m in mail.outbox] == [[user.email]]


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


def test_a_transient_error_sends_the_effect_back_to_pending(smtp_refusing):
    make_user()
    [effect] = Effect.objects.filter(task="send_welcome_email")
    # Called directly, Celery's retry() re-raises the error instead of sending a retry message.
    with pytest.raises(ConnectionRefusedError):
        tasks.send_welcome_email(effect.pk)
    effect.refresh_from_db()
    assert (effect.status, effect.attempts) == (Effect.Status.PENDING, 1)
    assert effect.last_error.startswith("ConnectionRefusedError")


def test_the_last_attempt_dead_letters_instead_of_retrying(smtp_refusing, settings):
    make_user()
    [effect] = Effect.objects.filter(task="send_welcome_email")
    Effect.objects.filter(pk=effect.pk).update(attempts=settings.EFFECT_MAX_ATTEMPTS - 1)
    assert tasks.send_welcome_email(effect.pk) == "dead"
    effect.refresh_from_db()
    assert (effect.status, effect.attempts) == (Effect.Status.DEAD, settings.EFFECT_MAX_ATTEMPTS)


def test_a_live_attempt_is_not_taken_over_but_an_expired_one_is(settings):
    make_user()
    [effect] = Effect.objects.filter(task="send_welcome_email")
    Effect.objects.filter(pk=effect.pk).update(
        status=Effect.Status.RUNNING, attempts=1, started_at=timezone.now()
    )
    assert tasks.send_welcome_email(effect.pk) == "skipped"

    expired = timezone.now() - conf.lease - timedelta(seconds=1)
    Effect.objects.filter(pk=effect.pk).update(started_at=expired)
    assert tasks.send_welcome_email(effect.pk) == "done"
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
