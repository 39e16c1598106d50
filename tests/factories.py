"""Small builders for test data."""

import itertools

from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile

from notifications.models import Document

PASSWORD = "a quiet harbour at dawn"
# The welcome email's name in the ledger: a django.tasks task is named by its module path.
WELCOME_TASK = "notifications.tasks.send_welcome_email"
_numbers = itertools.count(1)


def make_user(username: str | None = None, **fields):
    username = username or f"user{next(_numbers)}"
    fields.setdefault("email", f"{username}@example.com")
    return get_user_model().objects.create_user(username=username, password=PASSWORD, **fields)


def make_document(owner, content: bytes = b"hello", name: str = "notes.txt", **fields):
    fields.setdefault("title", name)
    return Document.objects.create(
        owner=owner, file=ContentFile(content, name=name), size=len(content), **fields
    )
