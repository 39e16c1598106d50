"""Development's mailbox: every email the project sends, kept and readable in the browser.

With DEBUG on and no EMAIL_URL, email goes to ``EmailBackend`` below: each message a file of its
own under var/mail/ (``<time>-<random>.eml``), as an SMTP server would have received it. The
pages at /dev/mail/ (a 404 unless DEBUG) list them, newest first, and show one: its headers,
its text with the links clickable, and its HTML in a sandboxed frame.
"""

import email
import email.policy
import ipaddress
import re
import secrets
import time
from email.message import EmailMessage
from functools import wraps
from pathlib import Path

from django.conf import settings
from django.core.mail.backends import filebased
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.csp import csp_override
from django.views.decorators.http import require_GET

NAME = r"[0-9]+-[0-9a-f]{8}"  # what EmailBackend names a message
SHOWN = 100  # the newest, on the list
ONE = rf"^dev/mail/(?P<name>{NAME})/"  # a message's pages (urls.py)


class EmailBackend(filebased.EmailBackend):
    """Django's file backend, one file per message (Django's puts a connection's in one)."""

    def send_messages(self, email_messages) -> int:
        for message in email_messages:
            name = f"{time.time_ns()}-{secrets.token_hex(4)}.eml"
            (Path(self.file_path) / name).write_bytes(message.message().as_bytes())
        return len(email_messages)


def in_use() -> bool:
    """Development's mailbox is where email goes: DEBUG on and no EMAIL_URL."""
    backend = settings.MAILERS.get("default", {}).get("BACKEND", "")
    return settings.DEBUG and backend == f"{__name__}.EmailBackend"


def context(request) -> dict:
    """The navigation bar's "Mail" link (a context processor): shown while it is in use."""
    return {"dev_mail": in_use()}


def development_only(view):
    """A 404 unless the mailbox is in use and the visitor is on this machine (or staff): the
    mail holds every user's reset and share links, and runserver may listen on 0.0.0.0."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        local = ipaddress.ip_address(request.META.get("REMOTE_ADDR") or "0.0.0.0").is_loopback
        if not in_use() or not (local or request.user.is_staff):
            raise Http404("Development only")
        return view(request, *args, **kwargs)

    return wrapper


def mailbox() -> Path:
    return Path(settings.MAILERS["default"].get("OPTIONS", {}).get("file_path", "/nonexistent"))


def read(name: str) -> EmailMessage:
    path = mailbox() / f"{name}.eml"
    if not path.is_file():
        raise Http404("No such email")
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def part(message: EmailMessage, kind: str) -> str:
    body = message.get_body((kind,))
    try:
        return body.get_content() if body else ""
    except (LookupError, ValueError):  # a charset Python does not know
        return body.get_payload(decode=True).decode("utf-8", "replace")


@development_only
@require_GET
def inbox(request):
    names = sorted(p.stem for p in mailbox().glob("*.eml") if re.fullmatch(NAME, p.stem))
    messages = [{"name": name, "email": read(name)} for name in reversed(names[-SHOWN:])]
    return render(request, "notifications/devmail.html", {"messages": messages, "shown": SHOWN})


@development_only
@require_GET
def message(request, name: str):
    found = read(name)
    context = {"name": name, "email": found, "text": part(found, "plain")}
    context["has_html"] = bool(part(found, "html"))
    return render(request, "notifications/devmail_message.html", context)


# An email's own HTML, alone: in a frame of the message page only, with nothing of the site's
# origin (sandbox), no script, no form, its inline style allowed; <base target="_blank"> opens
# its links in a tab of their own, as a mail client does (the sandbox allows that popup).
@development_only
@require_GET
@xframe_options_sameorigin
@csp_override(
    {
        "default-src": ["'none'"],
        "style-src": ["'unsafe-inline'"],
        "img-src": ["data:"],
        "frame-ancestors": ["'self'"],
        "form-action": ["'none'"],
        "sandbox": ["allow-popups", "allow-popups-to-escape-sandbox"],
    }
)
def message_html(request, name: str):
    html = '<base target="_blank">' + part(read(name), "html")
    return HttpResponse(html, content_type="text/html; charset=utf-8")
