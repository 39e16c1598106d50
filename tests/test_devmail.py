"""Development's mailbox (project/devmail.py): what a worker sends with DEBUG on and no
EMAIL_URL is kept in a directory and read at /dev/mail/."""

import pytest
from django.core import mail

from tests.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def mailbox(settings, tmp_path):
    backend = {"BACKEND": "project.devmail.EmailBackend", "OPTIONS": {"file_path": str(tmp_path)}}
    settings.MAILERS = {"default": backend}
    settings.DEBUG = True  # the pages are development's only
    return tmp_path


def send_share_like_email() -> None:
    message = mail.EmailMultiAlternatives(
        "Ada shared “Plans” with you",
        "Download it: http://127.0.0.1:8000/shared/abc:1x:sig\n",
        "Signal Offload <noreply@example.com>",
        ["bob@example.com"],
    )
    html = '<p style="color: #333">Download <a href="x">it</a></p>'
    message.attach_alternative(html, "text/html")
    message.send()


def test_each_email_is_a_file_listed_newest_first_and_readable(client, mailbox):
    send_share_like_email()
    mail.send_mail("Welcome aboard", "Hello ada", "noreply@example.com", ["ada@example.com"])
    assert len(list(mailbox.glob("*.eml"))) == 2, "one file per message"

    inbox = client.get("/dev/mail/")
    assert inbox.status_code == 200
    page = inbox.content.decode()
    assert page.index("Welcome aboard") < page.index("Plans"), "newest first"

    [shared] = [p.stem for p in mailbox.glob("*.eml") if b"bob@example.com" in p.read_bytes()]
    shown = client.get(f"/dev/mail/{shared}/").content.decode()
    assert "bob@example.com" in shown
    link = "http://127.0.0.1:8000/shared/abc:1x:sig"
    assert f'<a href="{link}"' in shown, "the text's link, whole and clickable"
    assert f'src="/dev/mail/{shared}/html"' in shown


def test_an_emails_html_is_shown_alone_sandboxed_with_its_own_style(client, mailbox):
    send_share_like_email()
    [name] = [p.stem for p in mailbox.glob("*.eml")]
    html = client.get(f"/dev/mail/{name}/html")
    assert html.status_code == 200 and b'style="color: #333"' in html.content
    assert html.content.startswith(b'<base target="_blank">'), "its links open in a new tab"
    policy = html["Content-Security-Policy"]
    assert "sandbox" in policy and "default-src 'none'" in policy and "script-src" not in policy
    assert html["X-Frame-Options"] == "SAMEORIGIN"


def test_no_such_email_is_404(client, mailbox):
    assert client.get("/dev/mail/1-deadbeef/").status_code == 404
    assert client.get("/dev/mail/../settings.py/").status_code == 404


def test_without_debug_there_is_no_mailbox(client, mailbox, settings):
    settings.DEBUG = False
    assert client.get("/dev/mail/").status_code == 404


def test_only_this_machine_or_staff_reads_the_mailbox(client, mailbox):
    """runserver may listen on 0.0.0.0 (a VM, a container): the mail holds reset links."""
    assert client.get("/dev/mail/", REMOTE_ADDR="10.0.0.7").status_code == 404
    client.force_login(make_user("mail-admin", is_staff=True))
    assert client.get("/dev/mail/", REMOTE_ADDR="10.0.0.7").status_code == 200
