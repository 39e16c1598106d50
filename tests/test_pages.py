"""The HTML pages: each action records its effect, bad input shows an error next to the field."""

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from notifications.models import Document
from offload.models import Effect
from tests.factories import PASSWORD, WELCOME_TASK, make_document, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client):
    user = make_user("page-user")
    client.force_login(user)
    return user


def tasks_of(user) -> list[str]:
    return list(Effect.objects.filter(user=user).order_by("pk").values_list("task", flat=True))


GUIDE_SIGNALS = (
    "pre_save", "post_save", "pre_delete", "post_delete",
    "user_logged_in", "user_logged_out", "user_login_failed", "document_shared",
)  # fmt: skip


def test_the_landing_page_explains_each_signal_of_the_guide(client):
    html = client.get("/").content.decode()
    for name in (*GUIDE_SIGNALS, "manage.py import_users", "record_logout", "delete_stored_file"):
        assert f"<code>{name}" in html, name


def test_signing_up_on_the_page_signs_in_and_queues_the_welcome_email(client):
    page = client.get("/signup/").content.decode()
    assert '<label for="id_username">' in page and '<label for="id_password">' in page
    response = client.post(
        "/signup/", {"username": "pat", "email": "pat@example.com", "password": PASSWORD}
    )
    assert response.status_code == 302 and response.url == "/activity/"
    user = get_user_model().objects.get(username="pat")
    assert tasks_of(user) == [WELCOME_TASK, "record_login"]
    assert WELCOME_TASK in client.get("/activity/").content.decode()


def test_a_bad_sign_up_shows_the_error_next_to_the_field(client):
    make_user("taken")
    response = client.post(
        "/signup/", {"username": "taken", "email": "t@example.com", "password": PASSWORD}
    )
    assert response.status_code == 400
    assert 'id="id_username-error">That username is taken.' in response.content.decode()

    response = client.post("/signup/", {"username": "new", "email": "x", "password": "1"})
    html = response.content.decode()
    assert 'id="id_email-error"' in html and 'id="id_password-error"' in html
    assert not get_user_model().objects.filter(username="new").exists()


def test_a_wrong_password_on_the_login_page_shows_an_error_and_records_the_attempt():
    user = make_user()
    client = Client(enforce_csrf_checks=False)
    response = client.post("/login/", {"username": user.username, "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert "record_failed_login" in tasks_of(user)

    response = client.post("/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302
    assert "record_login" in tasks_of(user)


def test_pages_need_a_signed_in_user(client):
    for path in ("/documents/", "/activity/", "/account/", "/account/close"):
        response = client.get(path)
        assert response.status_code == 302 and response.url.startswith("/login/")


def test_documents_upload_replace_share_delete_on_the_page(client, signed_in, media_root):
    upload = SimpleUploadedFile("a.txt", b"first")
    response = client.post("/documents/", {"title": "Mine", "file": upload})
    assert response.status_code == 302
    document = Document.objects.get(owner=signed_in)
    old_name = document.file.name

    client.post(f"/documents/{document.pk}/file", {"file": SimpleUploadedFile("b.txt", b"2")})
    new_name = Document.objects.get(pk=document.pk).file.name
    client.post(f"/documents/{document.pk}/share", {"email": "friend@example.com"})
    client.post(f"/documents/{document.pk}/delete")

    assert not Document.objects.exists()
    deletes = Effect.objects.filter(task="delete_stored_file").order_by("pk")
    assert [e.args["name"] for e in deletes] == [old_name, new_name]
    # Three saves, one recount: refreshes coalesce while one is pending (no worker runs here).
    assert tasks_of(signed_in).count("refresh_profile_counters") == 1
    assert "send_share_email" in tasks_of(signed_in)


def test_a_bad_upload_on_the_page_is_a_400_with_the_error(client, signed_in, settings):
    settings.DOCUMENT_MAX_BYTES = 3
    response = client.post(
        "/documents/", {"title": "", "file": SimpleUploadedFile("a.txt", b"12345")}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="id_title-error"' in html and 'id="id_file-error"' in html
    assert not Document.objects.exists()


def test_a_bad_share_address_is_shown_beside_its_field_and_nothing_is_sent(client, signed_in):
    document = make_document(signed_in)
    response = client.post(f"/documents/{document.pk}/share", {"email": "no"})
    assert response.status_code == 400
    html = response.content.decode()
    assert f'id="share-{document.pk}-error">Enter a valid email address.' in html
    assert f'aria-describedby="share-{document.pk}-error"' in html
    assert "send_share_email" not in tasks_of(signed_in)


def test_a_replace_without_a_file_is_shown_beside_its_field(client, signed_in):
    document = make_document(signed_in)
    response = client.post(f"/documents/{document.pk}/file", {})
    assert response.status_code == 400
    assert f'id="replace-{document.pk}-error">This field is required.' in response.content.decode()
    assert "delete_stored_file" not in tasks_of(signed_in)


def test_someone_elses_document_is_404_on_the_page(client, signed_in):
    theirs = make_document(make_user())
    assert client.post(f"/documents/{theirs.pk}/delete").status_code == 404
    assert Document.objects.filter(pk=theirs.pk).exists()


def test_changing_the_address_on_the_account_page(client, signed_in):
    page = client.get("/account/").content.decode()
    assert 'value="page-user@example.com"' in page
    response = client.post("/account/", {"email": "new@example.com"}, follow=True)
    assert "Your address is now new@example.com" in response.content.decode()
    assert tasks_of(signed_in).count("send_email_change_notice") == 1

    make_user("other", email="other@example.com")
    response = client.post("/account/", {"email": "other@example.com"})
    assert response.status_code == 400
    assert 'id="id_email-error">Another account has that address.' in response.content.decode()
    response = client.post("/account/", {"email": "new@example.com"}, follow=True)
    assert "nothing changed" in response.content.decode()
    assert client.post("/account/", {}).status_code == 400, "an empty form is no change"
    assert client.post("/account/close", {}).status_code == 400
    assert tasks_of(signed_in).count("send_email_change_notice") == 1


def test_closing_the_account_asks_for_the_password(client, signed_in):
    page = client.get("/account/close").content.decode()
    assert "cannot be undone" in page and 'type="password"' in page
    response = client.post("/account/close", {"password": "wrong"})
    assert response.status_code == 400
    assert "Wrong password" in response.content.decode()
    assert get_user_model().objects.filter(pk=signed_in.pk).exists()

    response = client.post("/account/close", {"password": PASSWORD}, follow=True)
    assert "Your account was closed" in response.content.decode()
    assert not get_user_model().objects.filter(pk=signed_in.pk).exists()
    assert Effect.objects.filter(task="send_account_closed_email").count() == 1
    assert client.get("/activity/").status_code == 302, "signed out"


def test_after_an_account_closes_the_admin_and_other_users_see_a_sane_ledger(client, signed_in):
    other = make_user("stays")
    client.post("/account/close", {"password": PASSWORD})
    closed = Effect.objects.filter(task="send_account_closed_email").get()
    assert closed.user is None and closed.args["email"], "kept what the worker needs"

    admin = make_user("admin-user")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    change = f"/admin/workers/effect/{closed.pk}/change/"
    listing = client.get("/admin/workers/effect/?q=send_account_closed_email")
    assert listing.status_code == 200 and change in listing.content.decode()
    assert client.get(change).status_code == 200

    client.force_login(other)
    mine = client.get("/api/me/effects").json()
    assert {effect["task"] for effect in mine} == {WELCOME_TASK, "record_login"}


def test_the_activity_page_lists_sign_ins_with_their_end(client, signed_in):
    from notifications import effects

    [login] = Effect.objects.filter(task="record_login")
    effects.record_login(**login.args)  # the workers' part, here and below
    client.post("/logout/")
    [logout] = Effect.objects.filter(task__endswith="record_logout")
    ended = effects.record_logout(**logout.args["kwargs"])
    client.force_login(signed_in)  # a second sign-in, not signed out of
    effects.record_login(**Effect.objects.filter(task="record_login").latest("pk").args)

    html = client.get("/activity/live").content.decode()
    assert "Your sign-ins" in html and "record_logout" in html
    newest, first = html.split("Your sign-ins")[1].split("<tbody>")[1].split("</tr>")[:2]
    assert 'data-label="Signed out">—</td>' in newest
    stamp = timezone.localtime(ended.ended_at).strftime("%Y-%m-%d %H:%M:%S")
    assert f'data-label="Signed out">{stamp}</td>' in first
    assert f'data-label="Lasted">{ended.duration}</td>' in first


def test_each_activity_row_names_what_it_is_about(client, signed_in):
    document = make_document(signed_in, name="plans.txt")
    client.post(f"/documents/{document.pk}/share", {"email": "bob@example.com"})
    client.post(f"/documents/{document.pk}/delete")
    html = client.get("/activity/live").content.decode()
    assert "Share email to bob@example.com" in html
    assert "File removed from storage" in html and "Old file" not in html


def test_a_skipped_effect_shows_its_reason(client, signed_in):
    Effect.objects.filter(user=signed_in).update(status="skipped", reason="the document went")
    html = client.get("/activity/live").content.decode()
    assert 'data-status="skipped"' in html and '<span class="reason">the document went' in html


def test_a_password_reset_is_an_effect_and_says_the_same_for_any_address(client):
    known = make_user("known", email="known@example.com")
    imported = get_user_model().objects.create_user("imported", "imported@example.com", None)
    Effect.objects.all().delete()
    for address in ("KNOWN@example.com", "nobody@example.com", "imported@example.com"):
        response = client.post("/password/reset/", {"email": address})
        assert response.status_code == 302 and response.url == "/password/reset/sent/"
    resets = Effect.objects.filter(task="send_password_reset_email").order_by("pk")
    assert [e.args for e in resets] == [{"user_id": known.pk}, {"user_id": imported.pk}]

    shut = make_user("shut", email="shut@example.com", last_login=timezone.now())
    shut.set_unusable_password()  # an admin closed it: a reset must not reopen it
    shut.save()
    make_user("inactive", email="inactive@example.com", is_active=False)
    for address in ("shut@example.com", "inactive@example.com"):
        assert client.post("/password/reset/", {"email": address}).status_code == 302
    assert Effect.objects.filter(task="send_password_reset_email").count() == 2
    assert "Forgot your password?" in client.get("/login/").content.decode()


def test_changing_the_password_ends_the_other_sessions(client, signed_in):
    other = Client()
    other.force_login(signed_in)
    assert other.get("/activity/").status_code == 200
    new = "another quiet harbour at noon"
    response = client.post(
        "/password/change/",
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 302 and response.url == "/password/change/done/"
    assert client.get("/activity/").status_code == 200, "this session stays signed in"
    assert other.get("/activity/").status_code == 302, "the other one is signed out"


def test_the_owner_downloads_a_document_as_an_attachment_nothing_can_run(client, signed_in):
    """An uploaded evil.html is not a page of this site: an attachment, typed as bytes, in a
    sandbox with no sources (stored XSS was possible while /media/ served it inline)."""
    page = SimpleUploadedFile("evil.html", b"<script>alert(document.cookie)</script>")
    client.post("/documents/", {"title": "Evil", "file": page})
    document = Document.objects.get(owner=signed_in)
    assert "evil" not in document.file.name and document.original_name == "evil.html"

    response = client.get(f"/documents/{document.pk}/download")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"<script>alert(document.cookie)</script>"
    assert response["Content-Disposition"] == 'attachment; filename="evil.html"'
    assert response["Content-Type"] == "application/octet-stream"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert f'href="/documents/{document.pk}/download"' in client.get("/documents/").content.decode()


def test_nothing_under_media_root_has_a_url(client, signed_in):
    document = make_document(signed_in)
    assert client.get(f"/media/{document.file.name}").status_code == 404
    assert client.get(f"/{document.file.name}").status_code == 404
    other = Client()
    assert other.get(f"/documents/{document.pk}/download").status_code == 302, "to log in"
    other.force_login(make_user("not-the-owner"))
    assert other.get(f"/documents/{document.pk}/download").status_code == 404


def test_a_share_link_downloads_the_shared_file_until_it_expires(signed_in, settings):
    from datetime import timedelta

    from django.urls import reverse

    document = make_document(signed_in, content=b"shared bytes", name="plan.txt")
    link = reverse("shared_download", args=[document.share_token()])
    anonymous = Client()
    response = anonymous.get(link)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"shared bytes"
    assert response["Content-Disposition"] == 'attachment; filename="plan.txt"'

    assert anonymous.get(link[:-2] + "xx").status_code == 404, "tampered"
    assert anonymous.get("/shared/not-a-token").status_code == 404
    settings.SHARE_LINK_MAX_AGE = timedelta(seconds=-1)
    expired = anonymous.get(link)
    assert expired.status_code == 410 and "expired" in expired.content.decode()
    assert "sandbox" not in expired["Content-Security-Policy"], "a page of the site, styled"
    settings.SHARE_LINK_MAX_AGE = timedelta(days=7)

    document.file = SimpleUploadedFile("v2.txt", b"new")
    document.save()
    assert anonymous.get(link).status_code == 404, "the link was for the file as shared"
