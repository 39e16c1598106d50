"""The JSON API through Django's test client with CSRF enforced: the contract's shapes and status
codes, and a 4xx (never a 500) for bad input on every endpoint."""

import json

import pytest

from notifications import effects
from notifications.models import Document
from offload.models import Effect
from tests.client import upload_file
from tests.factories import PASSWORD, WELCOME_TASK, make_document, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(api):
    user = make_user("alice")
    assert api.sign_in(user.username).status_code == 200
    return user


def assert_names_field(response, status, field):
    assert response.status_code == status, response.content
    body = response.json()
    assert "detail" in body
    assert field in body.get("errors", {}), body


# --- the happy paths ------------------------------------------------------------------------


def test_sign_up_creates_the_account_and_records_the_welcome_email(api):
    response = api.post(
        "/api/users", {"username": "bob", "email": "bob@example.com", "password": PASSWORD}
    )
    assert response.status_code == 201
    body = response.json()
    assert body == {"id": body["id"], "username": "bob", "email": "bob@example.com"}
    assert Effect.objects.filter(task=WELCOME_TASK, user_id=body["id"]).exists()


def test_sign_in_and_out(api):
    user = make_user()
    response = api.sign_in(user.username)
    assert response.status_code == 200
    assert response.json()["username"] == user.username
    assert Effect.objects.filter(task="record_login", user=user).count() == 1
    assert api.get("/api/me").status_code == 200
    assert api.delete("/api/session").status_code == 204
    assert api.get("/api/me").status_code == 401


def test_a_wrong_password_is_401_and_records_a_failed_attempt(api):
    user = make_user()
    response = api.post("/api/session", {"username": user.username, "password": "nope"})
    assert response.status_code == 401
    assert response.json()["detail"]
    assert Effect.objects.filter(task="record_failed_login", user=user).count() == 1


def test_me_shows_the_profile_counters(api, alice):
    body = api.get("/api/me").json()
    assert body["username"] == "alice"
    assert set(body["profile"]) == {
        "document_count", "storage_bytes", "login_count", "last_login_at", "last_login_ip"
    }  # fmt: skip


def test_documents_upload_list_replace_share_delete(api, alice, media_root):
    response = api.upload("/api/documents", {"title": "Notes", "file": upload_file()})
    assert response.status_code == 201, response.content
    document = response.json()
    assert document["title"] == "Notes" and document["size"] == 11
    assert (media_root / document["file"]).read_bytes() == b"hello world"
    assert document["url"] == f"/documents/{document['id']}/download"
    assert "hello" not in document["file"], "stored under a random name"

    assert [d["id"] for d in api.get("/api/documents").json()] == [document["id"]]

    response = api.upload(f"/api/documents/{document['id']}/file", {"file": upload_file(b"v2")})
    assert response.status_code == 200
    assert response.json()["size"] == 2
    assert Effect.objects.get(task="delete_stored_file").args["name"] == document["file"]

    response = api.post(f"/api/documents/{document['id']}/share", {"email": "f@example.com"})
    assert response.status_code == 202
    assert Effect.objects.filter(task="send_share_email").count() == 1

    assert api.delete(f"/api/documents/{document['id']}").status_code == 204
    assert not Document.objects.exists()


def test_my_effects_are_listed_newest_first(api, alice):
    effects = api.get("/api/me/effects").json()
    assert [e["task"] for e in effects] == ["record_login", WELCOME_TASK]
    assert set(effects[0]) == {"id", "task", "status", "attempts", "created_at", "finished_at"}
    assert effects[0]["status"] == "pending"


def test_changing_the_email_address(api, alice):
    response = api.patch("/api/me", {"email": "alice@new.example"})
    assert response.status_code == 200, response.content
    assert response.json() == {"id": alice.pk, "username": "alice", "email": "alice@new.example"}
    alice.refresh_from_db()
    assert alice.email == "alice@new.example"
    [notice] = Effect.objects.filter(task="send_email_change_notice")
    assert notice.args["old_email"] == "alice@example.com"
    assert Effect.objects.filter(task="send_email_change_confirmation").count() == 1


def test_the_same_address_again_is_200_and_sends_nothing(api, alice):
    response = api.patch("/api/me", {"email": "alice@example.com"})
    assert response.status_code == 200
    assert not Effect.objects.filter(task__startswith="send_email_change").exists()


def test_an_address_another_account_has_is_409(api, alice):
    make_user("bob", email="Bob@Example.com")
    assert_names_field(api.patch("/api/me", {"email": "bob@example.com"}), 409, "email")
    alice.refresh_from_db()
    assert alice.email == "alice@example.com"


@pytest.mark.parametrize(
    "payload", [{}, {"email": "nope"}, {"email": "a@b.c\nBcc: x@y.z"}, {"email": 7}]
)
def test_a_bad_address_is_400_naming_the_email(api, alice, payload):
    assert_names_field(api.patch("/api/me", payload), 400, "email")
    assert not Effect.objects.filter(task__startswith="send_email_change").exists()


def test_closing_the_account(api, alice, media_root):
    document = make_document(alice)
    assert api.delete("/api/me", {"password": PASSWORD}).status_code == 204
    assert not type(alice).objects.filter(pk=alice.pk).exists()
    assert not Document.objects.filter(pk=document.pk).exists()
    assert Effect.objects.filter(task="send_account_closed_email").count() == 1
    assert Effect.objects.filter(task="delete_stored_file").count() == 1
    assert Effect.objects.filter(user_id=alice.pk).count() == 0, "the ledger kept its rows"
    assert Effect.objects.filter(task=WELCOME_TASK).count() == 1
    assert api.get("/api/me").status_code == 401, "the session went with the account"


def test_a_wrong_password_closes_nothing_and_counts_as_a_failed_sign_in(api, alice):
    make_document(alice)
    for payload in ({"password": "not it"}, {"password": ""}):
        assert_names_field(api.delete("/api/me", payload), 403, "password")
    assert_names_field(api.delete("/api/me", {}), 400, "password")
    assert type(alice).objects.filter(pk=alice.pk).exists() and Document.objects.exists()
    assert not Effect.objects.filter(task="send_account_closed_email").exists()
    assert api.get("/api/me").status_code == 200
    assert Effect.objects.filter(task="record_failed_login", user=alice).count() == 2


def test_password_guesses_through_closing_are_locked_out_like_sign_ins(api, alice, settings):
    statuses = [api.delete("/api/me", {"password": f"guess {n}"}).status_code for n in range(6)]
    assert statuses == [403] * 4 + [429] * 2  # django-axes: locked out at the 5th failure
    response = api.delete("/api/me", {"password": PASSWORD})
    assert response.status_code == 429, "the right password waits out the lockout"
    assert type(alice).objects.filter(pk=alice.pk).exists()


def test_my_sign_ins_are_listed_newest_first(api, alice):
    api.sign_in("alice")
    for effect in Effect.objects.filter(task="record_login").order_by("pk"):
        effects.record_login(**effect.args)  # the worker's part (see test_integration)
    logins = api.get("/api/me/logins").json()
    assert len(logins) == 2
    assert set(logins[0]) == {"at", "ip", "user_agent", "new_device", "ended_at"}
    assert logins[0]["at"] > logins[1]["at"] and logins[0]["ended_at"] is None


def test_other_peoples_documents_are_not_found(api, alice):
    theirs = make_document(make_user())
    assert api.delete(f"/api/documents/{theirs.pk}").status_code == 404
    assert (
        api.upload(f"/api/documents/{theirs.pk}/file", {"file": upload_file()}).status_code == 404
    )
    assert (
        api.post(f"/api/documents/{theirs.pk}/share", {"email": "x@example.com"}).status_code == 404
    )
    assert Document.objects.filter(pk=theirs.pk).exists()


def test_the_openapi_document_describes_the_api(api):
    spec = api.get("/api/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    paths = ("/api/users", "/api/session", "/api/me", "/api/me/effects", "/api/me/logins")
    for path in (*paths, "/api/documents"):
        assert path in spec["paths"], path


# --- bad input --------------------------------------------------------------------------------


def test_a_taken_username_is_409(api):
    make_user("taken")
    response = api.post(
        "/api/users", {"username": "taken", "email": "t@example.com", "password": PASSWORD}
    )
    assert_names_field(response, 409, "username")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "a@example.com", "password": PASSWORD}, "username"),
        ({"username": "a b/c", "email": "a@example.com", "password": PASSWORD}, "username"),
        ({"username": "x" * 151, "email": "a@example.com", "password": PASSWORD}, "username"),
        ({"username": "ok", "email": "not-an-email", "password": PASSWORD}, "email"),
        (
            {"username": "ok", "email": "a@example.com\r\nBcc: x@evil.test", "password": PASSWORD},
            "email",
        ),
        ({"username": "ok", "email": "a@example.com", "password": "123"}, "password"),
        ({"username": "ok", "email": "a@example.com", "password": 12345678}, "password"),
        ({"username": "ok", "email": "a@example.com"}, "password"),
    ],
)
def test_bad_sign_ups_are_400_naming_the_field(api, payload, field):
    assert_names_field(api.post("/api/users", payload), 400, field)


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b"null", b'"text"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_400(api, body):
    response = api.http.post(
        "/api/users", body, content_type="application/json", headers=api.csrf_header
    )
    assert response.status_code == 400
    assert response.json()["detail"]


def test_unsafe_requests_without_the_csrf_token_are_403(api):
    user = make_user()
    response = api.http.post(
        "/api/session",
        json.dumps({"username": user.username, "password": PASSWORD}),
        content_type="application/json",
    )
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not Effect.objects.filter(task="record_login").exists()


def test_changing_or_closing_the_account_needs_the_csrf_token(api, alice):
    for method, body in (("patch", {"email": "x@example.com"}), ("delete", {"password": PASSWORD})):
        response = getattr(api.http, method)(
            "/api/me", json.dumps(body), content_type="application/json"
        )
        assert response.status_code == 403 and "CSRF" in response.json()["detail"], method
    alice.refresh_from_db()
    assert alice.email == "alice@example.com"
    assert not Effect.objects.filter(
        task__in=["send_email_change_notice", "send_account_closed_email"]
    ).exists()


def test_protected_endpoints_are_401_when_signed_out(api):
    for response in (
        api.get("/api/me"),
        api.get("/api/me/effects"),
        api.get("/api/me/logins"),
        api.patch("/api/me", {"email": "x@example.com"}),
        api.delete("/api/me", {"password": PASSWORD}),
        api.get("/api/documents"),
        api.upload("/api/documents", {"title": "t", "file": upload_file()}),
        api.delete("/api/documents/1"),
        api.delete("/api/session"),
    ):
        assert response.status_code == 401, response.content


def test_bad_sign_in_bodies_are_400(api):
    assert_names_field(api.post("/api/session", {"username": "x"}), 400, "password")
    assert_names_field(
        api.post("/api/session", {"username": "x", "password": "p" * 5000}), 400, "password"
    )


@pytest.mark.parametrize(
    ("data", "field", "status"),
    [
        ({"file": "not a file"}, "title", 400),
        ({"title": "no file"}, "file", 400),
        ({"title": "", "file": "x"}, "title", 400),
        ({"title": "x" * 201, "file": "x"}, "title", 400),
    ],
)
def test_bad_uploads_are_4xx_naming_the_field(api, alice, data, field, status):
    data = {k: (upload_file() if v == "x" else v) for k, v in data.items()}
    assert_names_field(api.upload("/api/documents", data), status, field)
    assert not Document.objects.exists()


def test_a_too_large_upload_is_413(api, alice, settings):
    settings.DOCUMENT_MAX_BYTES = 10
    response = api.upload("/api/documents", {"title": "big", "file": upload_file(b"x" * 11)})
    assert_names_field(response, 413, "file")
    assert not Document.objects.exists()


@pytest.mark.parametrize(
    "name", ["../../escape.txt", "/etc/passwd", "..", "a\\..\\..\\b.txt", "ünï‮txt.exe", "x" * 300]
)
def test_a_hostile_file_name_is_stored_inside_media_root_or_refused(api, alice, media_root, name):
    # Built by hand: Django's test client would clean the name before sending it.
    boundary = "hostile-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nt\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: text/plain\r\n\r\nhi\r\n--{boundary}--\r\n"
    ).encode()
    response = api.http.post(
        "/api/documents",
        body,
        content_type=f"multipart/form-data; boundary={boundary}",
        headers=api.csrf_header,
    )
    assert response.status_code in (201, 400), response.content
    if response.status_code == 201:
        stored = (media_root / response.json()["file"]).resolve()
        assert stored.is_relative_to(media_root.resolve())
        assert stored.read_bytes() == b"hi"
    else:
        assert "file" in response.json()["errors"]


@pytest.mark.parametrize("bad_id", ["0", "-1", "abc", str(2**64), "1.5"])
def test_bad_document_ids_are_4xx(api, alice, bad_id):
    for response in (
        api.delete(f"/api/documents/{bad_id}"),
        api.upload(f"/api/documents/{bad_id}/file", {"file": upload_file()}),
        api.post(f"/api/documents/{bad_id}/share", {"email": "x@example.com"}),
    ):
        assert 400 <= response.status_code < 500, (bad_id, response.status_code)


def test_bad_share_requests_are_400_naming_the_email(api, alice):
    document = make_document(alice)
    for payload in ({}, {"email": "nope"}, {"email": "a@b.c\nBcc: x@evil.test"}, {"email": 5}):
        assert_names_field(api.post(f"/api/documents/{document.pk}/share", payload), 400, "email")
    assert not Effect.objects.filter(task="send_share_email").exists()


def test_bad_effect_limits_are_400(api, alice):
    for limit in ("0", "-5", "x", "100000"):
        assert api.get("/api/me/effects", limit=limit).status_code == 400


def test_a_multipart_header_without_a_valid_body_is_400_not_500(api):
    """Found by the fuzzer: the CSRF check read request.POST and the parser error escaped."""
    for path in ("/api/users", "/api/session"):
        response = api.http.post(
            path, b'{"username": ""}', content_type="multipart/form-data", headers=api.csrf_header
        )
        assert response.status_code == 400, (path, response.content)
        assert response.json()["detail"]


def test_errors_outside_the_routes_are_json_too(api):
    response = api.http.put("/api/csrf", headers=api.csrf_header)
    assert response.status_code == 405 and response.json() == {"detail": "Method Not Allowed"}
    assert api.get("/api/no-such-thing").json() == {"detail": "Not Found"}
