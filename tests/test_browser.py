"""The pages in a real headless browser: Playwright driving Debian's Chromium (never a browser
download), against the live web process, a real worker and Redis. Screenshots go to
var/screenshots/, or to SCREENSHOT_DIR (`make screenshots` writes docs/screenshots/)."""

import os
import shutil
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core import mail
from playwright.sync_api import expect

from devtools.processes import ROOT, wait_for
from notifications.models import Document, FailedLogin
from tests.factories import PASSWORD, WELCOME_TASK, make_document, make_user

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "var" / "screenshots"))

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
    ),
]


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls the tests and
    # their fixtures make between page actions are still plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
            ],
        )  # fmt: skip
        yield browser
        browser.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(chromium, live_server, worker):
    context = chromium.new_context(
        base_url=live_server.url, viewport={"width": 1100, "height": 800}
    )
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_up(page, username: str) -> None:
    page.goto("/signup/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Email").fill(f"{username}@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/activity/")


def test_the_landing_page_explains_each_action(page):
    page.goto("/")
    expect(page.get_by_role("heading", name="Django signals, offloaded to Celery")).to_be_visible()
    expect(page.get_by_role("cell", name="custom document_shared")).to_be_visible()
    shot(page, "home")


def test_sign_up_shows_the_welcome_email_go_to_done_without_a_reload(page, smtp_sink):
    page.goto("/signup/")
    shot(page, "signup")
    sign_up(page, "browser-ada")
    page.evaluate("window.stillTheSamePage = true")
    welcome = page.locator(f'tr[data-task="{WELCOME_TASK}"]')
    first_seen = welcome.get_attribute("data-status")
    wait_for(lambda: welcome.get_attribute("data-status") == "done", what="the welcome email: done")
    assert page.evaluate("window.stillTheSamePage") is True, "the page was reloaded"
    assert first_seen in ("queued", "running", "done")
    assert welcome.locator(".status").inner_text() == "done"
    wait_for(lambda: smtp_sink.to("browser-ada@example.com"), what="the email itself")
    wait_for(lambda: page.locator("#login-count").inner_text() == "1", what="the sign-in counted")
    shot(page, "activity")


def test_upload_replace_delete_update_counters_and_remove_files(page, media_root, tmp_path):
    sign_up(page, "browser-sam")
    first = tmp_path / "plan.txt"
    first.write_bytes(b"first version")
    page.goto("/documents/")
    page.get_by_label("Title").fill("Plan")
    page.get_by_label("File", exact=True).set_input_files(str(first))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("status").get_by_text("Uploaded “Plan”.")).to_be_visible()
    stored = media_root / Document.objects.get(title="Plan").file.name
    assert stored.read_bytes() == b"first version"
    with page.expect_download() as download:  # the title is the owner's download link
        page.get_by_role("link", name="Plan", exact=True).click()
    assert download.value.suggested_filename == "plan.txt"

    page.goto("/activity/")
    wait_for(lambda: page.locator("#document-count").inner_text() == "1", what="document count 1")
    assert page.locator("#storage-bytes").inner_text() == "13\xa0bytes"

    second = tmp_path / "plan-v2.txt"
    second.write_bytes(b"v2")
    page.goto("/documents/")
    page.get_by_label("New file for Plan").set_input_files(str(second))
    page.get_by_role("button", name="Replace").click()
    wait_for(lambda: not stored.exists(), what="the replaced file to be deleted")
    replaced = media_root / Document.objects.get(title="Plan").file.name
    shot(page, "documents")

    page.get_by_role("link", name="Delete Plan").click()  # asks first
    expect(page.get_by_role("heading", name="Delete “Plan”?")).to_be_visible()
    shot(page, "delete")
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status").get_by_text("Deleted “Plan”")).to_be_visible()
    page.goto("/activity/")
    wait_for(lambda: page.locator("#document-count").inner_text() == "0", what="document count 0")
    assert not replaced.exists()
    assert page.locator('tr[data-task="delete_stored_file"][data-status="done"]').count() == 2


def test_a_wrong_password_shows_an_error_and_records_the_attempt(page):
    user = make_user("browser-mo")
    page.goto("/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Please enter a correct username and password")).to_be_visible()
    shot(page, "login-error")
    wait_for(lambda: FailedLogin.objects.filter(user=user).exists(), what="the failed attempt")


def test_change_the_address_then_close_the_account(page, smtp_sink):
    sign_up(page, "browser-cy")
    page.get_by_role("link", name="Account").click()
    page.get_by_label("Email").fill("cy@new.example")
    page.get_by_role("button", name="Change address").click()
    expect(
        page.get_by_role("status").get_by_text("Your address is now cy@new.example")
    ).to_be_visible()
    wait_for(lambda: smtp_sink.to("cy@new.example"), what="the confirmation to the new address")
    wait_for(
        lambda: [m for m in smtp_sink.to("browser-cy@example.com") if "changed" in m["Subject"]],
        what="the notice to the old address",
    )
    shot(page, "account")

    page.get_by_role("link", name="Close my account…").click()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Close my account").click()
    expect(page.get_by_role("status").get_by_text("Your account was closed")).to_be_visible()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    wait_for(
        lambda: [m for m in smtp_sink.to("cy@new.example") if "closed" in m["Subject"]],
        what="the goodbye email, to the address the account had last",
    )


def test_every_page_runs_under_a_strict_csp_without_a_violation(page):
    """Django's CSP middleware: 'self' only, nothing inline, on the pages, the admin and the API
    docs (Swagger UI from our static files). Chromium reports each refusal on the console."""
    get_user_model().objects.create_superuser("browser-root", "root@example.com", PASSWORD)
    refusals = []
    page.on("console", lambda m: "Content Security Policy" in m.text and refusals.append(m.text))

    def visit(*paths: str) -> None:
        for path in paths:
            response = page.goto(path)
            assert "default-src 'self'" in response.headers["content-security-policy"], path
            page.wait_for_load_state("networkidle")

    visit("/", "/signup/", "/login/", "/password/reset/", "/api/docs")
    assert page.locator(".swagger-ui .opblock").count() > 10, "Swagger UI ran"
    page.goto("/admin/login/")
    page.get_by_label("Username").fill("browser-root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    visit("/admin/", "/admin/workers/effect/", "/admin/auth/user/", "/documents/", "/activity/")
    visit("/account/", "/account/close", "/password/change/")
    assert refusals == []

    # Enforced, not only sent: an injected inline script is refused, and said so.
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.injected = true'; document.body.appendChild(s); }"
    )
    wait_for(lambda: refusals, what="the refusal on the console")
    assert page.evaluate("window.injected") is None


def test_live_parts_change_only_when_something_changed(page):
    """Each open page polls its live parts every second; a part is rewritten (and announced to
    a screen reader by its aria-live) only when the server says it changed."""
    sign_up(page, "browser-lee")
    user = get_user_model().objects.get(username="browser-lee")
    wait_for(lambda: not user.effects.exclude(status="done").exists(), what="all effects done")
    shown = page.locator("#live tr[data-status]")
    wait_for(
        lambda: (
            shown.count() == user.effects.count()
            and all(row.get_attribute("data-status") == "done" for row in shown.all())
            and page.locator("#login-count").inner_text() == "1"
        ),
        what="the page showing all of them done, the sign-in counted",
    )
    page.evaluate(
        """() => { window.rewrites = 0;
        new MutationObserver(() => window.rewrites++)
          .observe(document.getElementById("live"), {childList: true, subtree: true}); }"""
    )
    for _ in range(3):  # three polls answered "not modified"
        page.wait_for_event("response", lambda r: "/activity/live" in r.url and r.status == 304)
    assert page.evaluate("window.rewrites") == 0

    page.goto("/documents/")
    page.evaluate("window.stillTheSamePage = true")
    make_document(user, b"twelve bytes")  # as if from another tab: a worker recounts
    counters = page.locator("#counters")
    wait_for(lambda: counters.inner_text().startswith("1 document, 12"), what="the counters")
    assert page.evaluate("window.stillTheSamePage") is True, "updated without a reload"


PHONE = {"width": 390, "height": 844}


def test_every_page_fits_a_phone(chromium, live_server, worker):
    """At 390 px nothing scrolls sideways and the navigation, Log out included, is on screen."""
    context = chromium.new_context(base_url=live_server.url, viewport=PHONE, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        for path in ("/", "/signup/", "/login/"):
            assert_fits(page, path)
        sign_up(page, "browser-phone-user-with-a-long-name")
        make_document(get_user_model().objects.get(username__startswith="browser-phone"))
        for path in ("/activity/", "/documents/", "/account/", "/password/change/"):
            assert_fits(page, path)
            log_out = page.get_by_role("button", name="Log out").bounding_box()
            assert log_out and log_out["x"] + log_out["width"] <= PHONE["width"], path
        page.goto("/activity/")
        shot(page, "phone-activity")
        page.goto("/documents/")
        shot(page, "phone-documents")
    finally:
        context.close()


def assert_fits(page, path: str) -> None:
    page.goto(path)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{path} is {width} px wide"


def test_a_live_page_whose_session_ended_goes_to_the_sign_in_page(page):
    """Signed out elsewhere (or by a password change): the live part is never replaced by the
    login page; the page itself is loaded again, which asks to sign in."""
    sign_up(page, "browser-gone")
    page.wait_for_event("response", lambda r: "/activity/live" in r.url)
    Session.objects.all().delete()
    page.wait_for_url("**/login/?next=/activity/")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()


def test_a_link_in_an_emails_html_opens_in_a_tab_of_its_own(page, settings, tmp_path):
    """Development's mailbox shows an email's HTML in a sandboxed frame; its links leave it."""
    settings.DEBUG = True
    backend = {"BACKEND": "project.devmail.EmailBackend", "OPTIONS": {"file_path": str(tmp_path)}}
    settings.MAILERS = {"default": backend}
    message = mail.EmailMultiAlternatives("Links", "See /activity/", to=["ada@example.com"])
    message.attach_alternative('<p><a href="/activity/">Your activity</a></p>', "text/html")
    message.send()
    page.goto("/dev/mail/")
    page.get_by_role("link", name="Links").click()
    frame = page.frame_locator("iframe.email-html")
    with page.context.expect_page() as opened:
        frame.get_by_role("link", name="Your activity").click()
    opened.value.wait_for_load_state()
    assert opened.value.url.endswith("/activity/") or "/login/" in opened.value.url
