"""Receivers at their seam: the right effect with the right arguments, recorded in the caller's
transaction and published only after it commits."""

import base64
import json
import threading

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.db import connection, transaction
from django.test import RequestFactory

from devtools.processes import wait_for
from devtools.wsgi import InProcessServer
from notifications import security, services
from notifications.models import Document, Profile
from notifications.signals import document_shared
from offload.models import Effect
from tests.factories import WELCOME_TASK, make_document, make_user
from tests.postgres import backend_pid, waiting_on_a_lock

pytestmark = pytest.mark.django_db


def effects(task=None):
    qs = Effect.objects.order_by("pk")
    return list(qs.filter(task=task) if task else qs)


def test_it_records_a_welcome_email_for_a_new_user(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        user = make_user("ada")
    [effect] = effects(WELCOME_TASK)
    assert effect.args == {"args": [], "kwargs": {"user_id": user.pk}}
    assert effect.user_id == user.pk
    assert effect.status == Effect.Status.PENDING
    assert len(callbacks) == 2  # the publish, and Django's task_enqueued signal


def test_it_does_not_welcome_a_user_again_on_update():
    user = make_user()
    user.first_name = "Ada"
    user.save()
    assert len(effects(WELCOME_TASK)) == 1


def test_it_publishes_only_the_effect_id_and_only_after_commit(
    django_capture_on_commit_callbacks, broker
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        user = make_user()
    assert broker.llen("emails") == 0, "published before the transaction committed"

    for callback in callbacks:
        callback()
    [raw] = broker.lrange("emails", 0, -1)
    message = json.loads(raw)
    [effect] = effects(WELCOME_TASK)
    assert message["headers"]["task"] == WELCOME_TASK
    body = json.loads(base64.b64decode(message["body"]))
    assert body[0] == [effect.pk]  # positional args: the id, nothing else
    assert user.email not in json.dumps(message)
    # The worker's own time limits apply (EFFECT_TIME_LIMIT as the worker reads it).
    assert message["headers"]["timelimit"] == [None, None]


@pytest.mark.django_db(transaction=True)
def test_in_a_web_request_it_publishes_once_the_response_is_sent(broker):
    """Driven as a WSGI server drives Django: the response is written, then closed (which sends
    request_finished). The client has its 201 before anything is published; all the request's
    effects go at the close."""
    body = json.dumps({"username": "late", "email": "late@example.com", "password": "pw-9-late-x"})
    status, response = InProcessServer().post("/api/users", body)  # the client has it

    assert status == 201, response.content
    [effect] = effects(WELCOME_TASK)
    assert broker.llen("emails") == 0, "published before the response was sent"
    response.close()
    assert broker.effect_ids("emails") == [effect.pk]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_change_records_and_publishes_nothing(broker):
    with pytest.raises(RuntimeError), transaction.atomic():
        make_user()
        raise RuntimeError("roll back")
    assert Effect.objects.count() == 0
    assert get_user_model().objects.count() == 0
    assert broker.llen("emails") == 0


def test_fixture_loads_trigger_nothing(tmp_path):
    fixture = tmp_path / "users.json"
    fixture.write_text(
        json.dumps(
            [
                {"model": "auth.user", "pk": 50, "fields": {"username": "loaded", "password": "!"}},
                {
                    "model": "notifications.document",
                    "pk": 7,
                    "fields": {
                        "owner": 50,
                        "title": "t",
                        "file": "documents/x.txt",
                        "size": 1,
                        "created_at": "2026-01-01T00:00:00Z",
                        "updated_at": "2026-01-01T00:00:00Z",
                    },
                },
            ]
        )
    )
    call_command("loaddata", str(fixture), verbosity=0)
    assert effects() == []


def test_it_records_a_sign_in_with_ip_and_user_agent():
    user = make_user()
    Effect.objects.all().delete()
    request = RequestFactory().post(
        "/login/", REMOTE_ADDR="10.1.2.3", HTTP_USER_AGENT="Firefox/140"
    )
    user_logged_in.send(sender=type(user), request=request, user=user)
    [effect] = effects("record_login")
    assert effect.user_id == user.pk
    assert effect.args["user_id"] == user.pk
    assert effect.args["ip"] == "10.1.2.3"
    assert effect.args["user_agent"] == "Firefox/140"
    assert "at" in effect.args


def test_a_failed_sign_in_records_a_username_hash_and_never_the_password():
    user = make_user("grace")
    request = RequestFactory().post("/login/", REMOTE_ADDR="10.9.9.9")
    user_login_failed.send(
        sender=__name__,
        credentials={"username": "grace", "password": "s3cret-sentinel"},
        request=request,
    )
    [effect] = effects("record_failed_login")
    assert effect.user_id == user.pk
    assert effect.args["user_id"] == user.pk
    assert effect.args["ip"] == "10.9.9.9"
    assert "s3cret-sentinel" not in json.dumps(effect.args)
    assert "grace" not in json.dumps(effect.args)
    assert len(effect.args["username_hash"]) == 64  # HMAC-SHA256, hex


def test_a_failed_sign_in_for_an_unknown_username_concerns_no_user():
    user_login_failed.send(sender=__name__, credentials={"username": "nobody", "password": "x"})
    [effect] = effects("record_failed_login")
    assert effect.user_id is None
    assert effect.args["user_id"] is None
    assert effect.args["ip"] is None


def test_a_new_document_refreshes_the_owner_counters_and_deletes_nothing():
    owner = make_user()
    make_document(owner)
    [effect] = effects("refresh_profile_counters")
    assert effect.args == {"user_id": owner.pk}
    assert effects("delete_stored_file") == []


def test_replacing_the_file_deletes_the_old_name_read_from_the_database():
    owner = make_user()
    document = make_document(owner, name="old.txt")
    old_name = Document.objects.get(pk=document.pk).file.name
    fresh = Document.objects.get(pk=document.pk)
    fresh.file = ContentFile(b"new", name="new.txt")
    fresh.save()
    [effect] = effects("delete_stored_file")
    assert effect.args == {"name": old_name, "owner_id": owner.pk}
    assert effect.user_id == owner.pk, "listed in the owner's activity"
    assert fresh.file.name != old_name


def test_saving_without_replacing_the_file_deletes_nothing():
    document = make_document(make_user())
    document.title = "renamed"
    document.save()
    Document.objects.get(pk=document.pk).save()
    assert effects("delete_stored_file") == []


def test_deleting_a_document_deletes_its_file_and_refreshes_counters():
    owner = make_user()
    document = make_document(owner)
    name = document.file.name
    Effect.objects.all().delete()
    Document.objects.get(pk=document.pk).delete()
    assert [e.args for e in effects("delete_stored_file")] == [{"name": name, "owner_id": owner.pk}]
    assert [e.args for e in effects("refresh_profile_counters")] == [{"user_id": owner.pk}]


def test_an_email_change_notifies_the_stored_address_and_confirms_the_new_one():
    user = make_user("eve", email="eve@old.example")
    Effect.objects.all().delete()
    user.email = "trusted-from-request@old.example"  # what a stale instance might claim
    type(user).objects.filter(pk=user.pk).update(email="eve@stored.example")
    user.email = "eve@new.example"
    user.save()
    [notice] = effects("send_email_change_notice")
    assert notice.args == {
        "user_id": user.pk,
        "username": "eve",
        "old_email": "eve@stored.example",  # read from the row, not the instance
        "new_email": "eve@new.example",
    }
    [confirmation] = effects("send_email_change_confirmation")
    assert confirmation.args == {"user_id": user.pk, "email": "eve@new.example"}
    assert notice.user_id == confirmation.user_id == user.pk


def test_saving_the_same_address_or_other_fields_sends_no_email(django_assert_num_queries):
    user = make_user("same", email="same@example.com")
    Effect.objects.all().delete()
    user.save()
    user.first_name = "Sam"
    user.save(update_fields=["first_name"])
    with django_assert_num_queries(1):  # a sign-in's save of last_login reads nothing more
        user.save(update_fields=["last_login"])
    assert effects() == []


def test_closing_an_account_captures_its_address_and_files_before_they_go(media_root):
    owner = make_user("leaver", email="leaver@example.com")
    names = sorted(make_document(owner, name=f"f{i}.txt").file.name for i in range(3))
    other = make_document(make_user("stays"), name="kept.txt")
    Effect.objects.all().delete()

    owner.delete()

    [goodbye] = effects("send_account_closed_email")
    assert goodbye.args == {"email": "leaver@example.com", "username": "leaver"}
    assert goodbye.user_id is None
    deletions = effects("delete_stored_file")
    assert sorted(e.args["name"] for e in deletions) == names, "one deletion per file, once"
    assert all(e.user_id is None for e in deletions)
    assert effects("refresh_profile_counters") == [], "no recount for an account that is gone"
    assert Document.objects.get(pk=other.pk)


def test_deleting_users_by_queryset_also_deletes_each_file_once():
    owner = make_user()
    name = make_document(owner).file.name
    Effect.objects.all().delete()
    get_user_model().objects.filter(pk=owner.pk).delete()
    assert [e.args["name"] for e in effects("delete_stored_file")] == [name]


def test_a_sign_in_gives_its_session_an_id_that_the_sign_out_records(client):
    user = make_user()
    client.force_login(user)
    [login] = effects("record_login")
    sign_in = client.session["sign_in"]
    assert login.args["sign_in"] == sign_in and len(sign_in) == 32
    assert client.session.session_key not in json.dumps(login.args)

    client.post("/logout/")
    [logout] = effects("notifications.tasks.record_logout")
    at = logout.args["kwargs"]["at"]
    assert logout.args == {"args": [], "kwargs": {"user_id": user.pk, "sign_in": sign_in, "at": at}}
    assert logout.user_id == user.pk


def test_signing_out_without_a_sign_in_records_nothing():
    user_logged_out.send(sender=None, request=RequestFactory().post("/"), user=None)
    assert effects("notifications.tasks.record_logout") == []


def test_sharing_a_document_emails_the_recipient():
    owner = make_user()
    document = make_document(owner)
    document_shared.send(
        sender=Document, document=document, recipient="friend@example.com", shared_by=owner
    )
    [effect] = effects("send_share_email")
    assert effect.args == {
        "document_id": document.pk,
        "recipient": "friend@example.com",
        "shared_by_id": owner.pk,
    }
    assert effect.user_id == owner.pk


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("fault", "published"),
    [("broker-refused", False), ("database-locked", True), ("publish-crashed", True)],
)
def test_nothing_after_the_commit_fails_the_request(
    fault, published, api, broker, monkeypatch, caplog
):
    """The sign-up is committed: whatever goes wrong in the publish after the response (the
    broker refuses it; then, as well, clearing ``published_at`` meets a locked database; the
    publish raises something no one foresaw) is logged and left to the relay, and the client
    gets its 201. A publish known to have failed clears ``published_at`` (the relay publishes
    it after EFFECT_RELAY_GRACE); otherwise the relay takes it for a lost message."""
    from django.db import OperationalError
    from django.db.models import QuerySet

    from offload import messages, outbox

    def refused(effects):
        raise ConnectionError("Connection refused")

    monkeypatch.setattr(messages, "push", refused)
    if fault == "database-locked":
        real_update = QuerySet.update

        def update(self, **kwargs):
            if self.model is Effect and "published_at" in kwargs:
                raise OperationalError("database is locked")
            return real_update(self, **kwargs)

        monkeypatch.setattr(QuerySet, "update", update)
    elif fault == "publish-crashed":
        monkeypatch.setattr(outbox, "publish_all", lambda *args: 1 / 0)

    response = api.sign_up("after-commit")

    assert response.status_code == 201, response.content
    [effect] = effects(WELCOME_TASK)
    assert effect.status == "pending"
    assert (effect.published_at is not None) == published
    error = {"broker-refused": "Connection refused", "database-locked": "database is locked"}
    assert error.get(fault, "ZeroDivisionError") in caplog.text


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_a_document_committed_while_the_account_closes_goes_with_it(media_root):
    """A row of the user committed after the deletion collected the user's rows (an upload, a
    worker's sign-in record) fails the deletion's commit on its foreign key; close_account
    tries again, and that try deletes the row and its file too.

    PostgreSQL only: SQLite lets one writer at a time, so nothing commits in between."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers: PostgreSQL only (run with DATABASE_URL=postgres://...)")
    owner = make_user("closing")
    Profile.objects.create(user=owner)
    closer = Closer(owner)
    with transaction.atomic():  # another writer: holds the owner's profile, adds a document
        Profile.objects.select_for_update().get(user=owner)
        late = make_document(owner, name="late.txt")
        closer.start_and_wait("the deletion to wait on the profile's row lock")

    assert closer.finished(), closer.errors
    assert not get_user_model().objects.filter(pk=owner.pk).exists()
    assert not Document.objects.exists()
    names = [e.args["name"] for e in effects("delete_stored_file")]
    assert names == [late.file.name], "offloaded once, by the try that deleted it"
    assert len(effects("send_account_closed_email")) == 1


@pytest.mark.django_db(transaction=True)
def test_closing_an_account_that_is_already_gone_says_goodbye_once(media_root):
    owner = make_user("twice")
    make_document(owner, name="once.txt")
    services.close_account(owner)
    services.close_account(owner)  # a double submit, after the first one committed

    assert not get_user_model().objects.filter(pk=owner.pk).exists()
    assert len(effects("send_account_closed_email")) == 1
    assert len(effects("delete_stored_file")) == 1


@pytest.mark.django_db
def test_a_second_submit_of_a_close_finds_the_account_closed_and_checks_no_password():
    owner = make_user("resubmit")
    request = RequestFactory().post("/api/me")
    SessionMiddleware(lambda r: None).process_request(request)
    request.session["signed_in_as"] = owner.pk  # what flush() must clear
    request.user = owner  # loaded by the second request before the first one committed
    services.close_account(owner)  # the first

    assert security.close_own_account(request, "not the password")
    assert not effects("record_failed_login"), "no failed sign-in for a closed account"
    assert request.session.is_empty()


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_two_closes_at_once_say_goodbye_once(media_root):
    """The second close reads the account before the first commits, then its DELETE waits for
    the first's and removes nothing: it rolls back the goodbye it had recorded.

    PostgreSQL only: SQLite lets one writer at a time, so the second finds the account gone."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers: PostgreSQL only (run with DATABASE_URL=postgres://...)")
    owner = make_user("double")
    make_document(owner, name="double.txt")
    second = Closer(owner)
    with transaction.atomic():  # the first close, not yet committed
        services.close_account(owner)
        second.start_and_wait("the second close to wait for the first")

    assert second.finished(), second.errors
    assert not get_user_model().objects.filter(pk=owner.pk).exists()
    assert len(effects("send_account_closed_email")) == 1
    assert len(effects("delete_stored_file")) == 1


class Closer(threading.Thread):
    """services.close_account(user) on a database connection of its own, started while the test
    holds a lock that its deletion must wait for (PostgreSQL)."""

    def __init__(self, user) -> None:
        super().__init__()
        self.user, self.pid, self.errors = user, None, []

    def run(self) -> None:
        self.pid = backend_pid()
        try:
            services.close_account(self.user)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            self.errors.append(exc)
        finally:
            connection.close()

    def start_and_wait(self, what: str) -> None:
        self.start()
        wait_for(lambda: self.pid, what="the closer's connection")
        wait_for(lambda: waiting_on_a_lock(self.pid), what=what)

    def finished(self) -> bool:
        """Whether the close ended without an error (its errors are in ``errors``)."""
        self.join(timeout=20)
        return not self.is_alive() and not self.errors
