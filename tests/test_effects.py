"""Each effect as a plain function: what it sends, writes and deletes."""

import json
from datetime import timedelta

import pytest
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db.models import Sum
from django.utils import timezone

from notifications import effects
from notifications.models import Document, FailedLogin, LoginActivity, Profile
from offload import Skip
from tests.factories import make_document, make_user

pytestmark = pytest.mark.django_db


def html_of(message) -> str:
    [(html, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    return html


def now_iso(delta: timedelta = timedelta(0)) -> str:
    return (timezone.now() + delta).isoformat()


def test_the_welcome_email_goes_to_the_new_user_in_text_and_html():
    user = make_user("ada", email="ada@example.com")
    message = effects.welcome_email(user.pk)
    assert message.to == ["ada@example.com"]
    assert message.subject == "Welcome aboard"
    assert "Hello ada" in message.body
    assert "Hello ada" in html_of(message)
    assert "/activity/" in message.body


def test_no_welcome_email_for_a_user_deleted_before_it_ran():
    user = make_user()
    user_id = user.pk
    user.delete()
    with pytest.raises(Skip, match="closed or deactivated before the email was sent"):
        effects.welcome_email(user_id)
    with pytest.raises(Skip, match="no email address"):
        effects.welcome_email(make_user(email="").pk)


def test_a_sign_in_is_recorded_and_counted():
    user = make_user()
    effects.record_login(user.pk, "10.0.0.1", "Firefox", now_iso())
    [login] = LoginActivity.objects.filter(user=user)
    assert (login.ip, login.user_agent, login.new_device) == ("10.0.0.1", "Firefox", False)
    profile = Profile.objects.get(user=user)
    assert profile.login_count == 1
    assert profile.last_login_ip == "10.0.0.1"
    assert profile.last_login_at == login.at


def test_a_sign_out_ends_its_own_sign_in_record_once():
    user = make_user()
    at = timezone.now()
    effects.record_login(user.pk, "10.0.0.1", "Firefox", at.isoformat(), sign_in="a" * 32)
    effects.record_login(user.pk, "10.0.0.2", "Firefox", at.isoformat(), sign_in="b" * 32)
    effects.record_logout(user.pk, "a" * 32, (at + timedelta(minutes=3)).isoformat())
    effects.record_logout(user.pk, "a" * 32, (at + timedelta(minutes=9)).isoformat())  # a repeat
    ended = LoginActivity.objects.get(sign_in="a" * 32)
    assert ended.ended_at == at + timedelta(minutes=3)
    assert ended.duration == timedelta(minutes=3)
    assert LoginActivity.objects.get(sign_in="b" * 32).ended_at is None


def test_a_sign_out_that_overtook_its_sign_in_waits_for_another_attempt():
    """Not a permanent error: the retry finds the record that the other worker has written."""
    from offload.base import PERMANENT_ERRORS

    user = make_user()
    with pytest.raises(effects.SignInNotRecordedYet) as raised:
        effects.record_logout(user.pk, "c" * 32, now_iso())
    assert not isinstance(raised.value, PERMANENT_ERRORS)
    user_id = user.pk
    user.delete()
    with pytest.raises(Skip, match="closed with its sign-in records"):
        effects.record_logout(user_id, "c" * 32, now_iso())


def test_an_email_change_notice_goes_to_the_old_address_even_with_the_account_gone():
    message = effects.email_change_notice("eve", "eve@old.example", "eve@new.example")
    assert message.to == ["eve@old.example"]
    assert "Hello eve" in message.body
    assert "eve@new.example" in message.body and "eve@new.example" in html_of(message)


def test_a_confirmation_goes_only_while_the_address_is_still_the_accounts():
    user = make_user("eve", email="eve@new.example")
    assert effects.email_change_confirmation(user.pk, "eve@new.example").to == ["eve@new.example"]
    user.email = "eve@newer.example"
    user.save()
    with pytest.raises(Skip, match="the address changed again"):
        effects.email_change_confirmation(user.pk, "eve@new.example")


def test_the_goodbye_email_needs_nothing_but_what_the_receiver_captured():
    message = effects.account_closed_email("gone@example.com", "gone")
    assert message.to == ["gone@example.com"]
    assert "Goodbye gone" in message.body and "Goodbye gone" in html_of(message)


def test_a_sign_in_from_a_new_address_is_a_new_device():
    user = make_user()
    first = effects.record_login(user.pk, "10.0.0.1", "Firefox", now_iso())
    again = effects.record_login(user.pk, "10.0.0.1", "Firefox", now_iso())
    assert not first.new_device and not again.new_device

    new_login = effects.record_login(user.pk, "203.0.113.7", "Firefox", now_iso())
    assert new_login.new_device
    assert LoginActivity.objects.get(ip="203.0.113.7") == new_login
    assert Profile.objects.get(user=user).login_count == 3


def test_a_sign_in_from_a_new_browser_is_a_new_device_too():
    user = make_user()
    effects.record_login(user.pk, "10.0.0.1", "Firefox", now_iso())
    assert effects.record_login(user.pk, "10.0.0.1", "curl/8", now_iso()).new_device


def test_a_sign_in_of_a_deleted_user_records_nothing():
    user = make_user()
    user_id = user.pk
    user.delete()
    with pytest.raises(Skip, match="closed before the sign-in was recorded"):
        effects.record_login(user_id, "10.0.0.1", "Firefox", now_iso())
    assert not LoginActivity.objects.exists()


def test_the_new_sign_in_email_names_the_address_and_browser():
    user = make_user("lin", email="lin@example.com")
    login = LoginActivity.objects.create(
        user=user, at=timezone.now(), ip="203.0.113.7", user_agent="Lynx/2", new_device=True
    )
    message = effects.new_sign_in_email(login.pk)
    assert message.to == ["lin@example.com"]
    assert "203.0.113.7" in message.body and "Lynx/2" in message.body
    assert "203.0.113.7" in html_of(message)


def test_a_failed_sign_in_keeps_the_hash_and_address_only():
    user = make_user()
    effects.record_failed_login("ab" * 32, "10.0.0.9", now_iso(), user.pk)
    [failure] = FailedLogin.objects.all()
    assert (failure.username_hash, failure.ip, failure.user_id) == ("ab" * 32, "10.0.0.9", user.pk)
    stored = json.dumps(list(FailedLogin.objects.values()), default=str)
    assert user.username not in stored


def test_the_owner_is_alerted_once_after_five_failures_in_the_window(settings):
    user = make_user()
    failures = [
        effects.record_failed_login("cd" * 32, "10.0.0.9", now_iso(), user.pk)
        for _ in range(settings.FAILED_LOGIN_ALERT_THRESHOLD + 1)
    ]
    assert [f.alerted for f in failures] == [False] * 4 + [True, False]
    assert FailedLogin.objects.filter(alerted=True).get() == failures[4]


def test_old_failures_do_not_count_towards_an_alert(settings):
    user = make_user()
    old = timezone.now() - settings.FAILED_LOGIN_WINDOW - timedelta(minutes=1)
    FailedLogin.objects.bulk_create(
        FailedLogin(user=user, at=old, username_hash="x" * 64) for _ in range(10)
    )
    assert not effects.record_failed_login("x" * 64, None, now_iso(), user.pk).alerted


def test_failures_for_unknown_usernames_are_recorded_without_an_alert():
    failures = [
        effects.record_failed_login("ef" * 32, "10.0.0.9", now_iso(), None) for _ in range(6)
    ]
    assert FailedLogin.objects.filter(user=None).count() == 6
    assert not any(f.alerted for f in failures)


def test_the_failed_sign_in_alert_tells_how_many_and_from_where():
    user = make_user("mo", email="mo@example.com")
    for _ in range(5):
        failure = FailedLogin.objects.create(
            user=user, at=timezone.now(), ip="198.51.100.4", username_hash="h" * 64
        )
    message = effects.failed_login_alert(failure.pk)
    assert message.to == ["mo@example.com"]
    assert "5 failed attempts" in message.body
    assert "198.51.100.4" in message.body


def test_a_deleted_file_is_gone_from_media_root(media_root):
    document = make_document(make_user())
    name = document.file.name
    assert (media_root / name).exists()
    Document.objects.filter(pk=document.pk).delete()
    effects.delete_stored_file(name)
    assert not (media_root / name).exists()


def test_a_file_another_document_refers_to_is_kept(media_root):
    owner = make_user()
    document = make_document(owner)
    Document.objects.create(owner=owner, title="twin", file=document.file.name, size=5)
    Document.objects.filter(pk=document.pk).delete()
    effects.delete_stored_file(document.file.name)
    assert (media_root / document.file.name).exists()


def test_deleting_a_missing_file_is_harmless():
    effects.delete_stored_file("documents/never-existed.txt")


def test_a_name_outside_media_root_is_refused(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    with pytest.raises(SuspiciousFileOperation):
        effects.delete_stored_file(str(outside))
    with pytest.raises(SuspiciousFileOperation):
        effects.delete_stored_file("../" * 10 + str(outside).lstrip("/"))
    assert outside.exists()


def test_counters_equal_a_recount_and_a_repeat_changes_nothing():
    owner = make_user()
    make_document(owner, b"12345")
    make_document(owner, b"1234567890")
    make_document(make_user(), b"not mine")
    effects.refresh_profile_counters(owner.pk)
    effects.refresh_profile_counters(owner.pk)
    profile = Profile.objects.get(user=owner)
    recount = Document.objects.filter(owner=owner)
    assert profile.document_count == recount.count() == 2
    assert profile.storage_bytes == recount.aggregate(s=Sum("size"))["s"] == 15

    recount.first().delete()
    effects.refresh_profile_counters(owner.pk)
    assert Profile.objects.get(user=owner).document_count == 1


def test_the_share_email_goes_to_the_recipient_with_a_link():
    owner = make_user("sam")
    document = make_document(owner, name="plan.txt", title="The plan")
    message = effects.share_email(document.pk, "friend@example.com", owner.pk)
    assert message.to == ["friend@example.com"]
    assert message.subject == "sam shared “The plan” with you"
    [link] = [word for word in message.body.split() if "/shared/" in word]
    assert link.startswith("http://127.0.0.1:8000/shared/")  # SITE_URL: a worker has no request
    assert link in html_of(message) and "The plan" in html_of(message)


def test_a_replaced_file_keeps_its_new_name_on_disk(media_root):
    document = make_document(make_user(), name="a.txt")
    old = document.file.name
    document.file = ContentFile(b"b", name="b.txt")
    document.save()
    effects.delete_stored_file(old)
    assert not default_storage.exists(old)
    assert default_storage.exists(document.file.name)


def test_the_password_reset_link_is_made_by_the_worker_and_works():
    from django.contrib.auth.tokens import default_token_generator
    from django.utils.http import urlsafe_base64_decode

    user = make_user("reset", email="reset@example.com")
    message = effects.password_reset_email(user.pk)
    assert message.to == ["reset@example.com"]
    [link] = [word for word in message.body.split() if "/password/reset/" in word]
    uidb64, token = link.rstrip("/").split("/")[-2:]
    assert urlsafe_base64_decode(uidb64).decode() == str(user.pk)
    assert default_token_generator.check_token(user, token)
    assert link in html_of(message)

    user.is_active = False
    user.save()
    with pytest.raises(Skip, match="closed or deactivated"):
        effects.password_reset_email(user.pk)
