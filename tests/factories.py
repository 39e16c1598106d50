"""Small builders for test data."""

import itertools

import requests
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile

from notifications.models import Document

PASSWORD = "a quiet harbour at dawn"
_numbers = itertools.count(1)


def make_user(username: str | None = None, **fields):
    username = username or f"user{next(_numbers)}"
    fields.setdefault("email", f"{username}@example.com")
    return get_user_model().objects.create_user(username=username, password=PASSWORD, **fields)


class Visitor(requests.Session):
    """Someone using a web process we started, over HTTP, with Django's CSRF rules."""

    def __init__(self, base_url: str):
        super().__init__()
        self.base_url = base_url
        self.get(base_url + "/api/csrf", timeout=5).raise_for_status()

    def sign_up(self, username: str, password: str = PASSWORD) -> requests.Response:
        return self.send_json(
            "/api/users",
            {"username": username, "email": f"{username}@example.com", "password": password},
        )

    def sign_in(self, username: str, password: str = PASSWORD) -> requests.Response:
        return self.send_json("/api/session", {"username": username, "password": password})

    def send_json(self, path: str, body: dict) -> requests.Response:
        """POST with the CSRF token Django expects (it changes at sign-in: read it each time)."""
        return self.post(
            self.base_url + path,
            json=body,
            headers={"X-CSRFToken": self.cookies["csrftoken"]},
            timeout=10,
        )


def make_document(owner, content: bytes = b"hello", name: str = "notes.txt", **fields):
    fields.setdefault("title", name)
    return Document.objects.create(
        owner=owner, file=ContentFile(content, name=name), size=len(content), **fields
    )
