"""The writes behind the API and the pages. Each runs in one transaction, so the signals it
fires record their effects atomically with the change (see offload/outbox.py)."""

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction

from .models import Document
from .signals import document_shared

User = get_user_model()


class UsernameTaken(Exception):
    pass


def sign_up(username: str, email: str, password: str) -> User:
    """Create the account; its post_save offloads the welcome email."""
    if User.objects.filter(username=username).exists():
        raise UsernameTaken(username)
    try:
        with transaction.atomic():
            return User.objects.create_user(username=username, email=email, password=password)
    except IntegrityError as exc:  # lost a race with another sign-up of the same name
        raise UsernameTaken(username) from exc


@transaction.atomic
def create_document(owner: User, title: str, file: UploadedFile) -> Document:
    return Document.objects.create(owner=owner, title=title, file=file, size=file.size)


@transaction.atomic
def replace_file(document: Document, upload: UploadedFile) -> Document:
    """Store the new file; the post_save receiver offloads deleting the old one."""
    document.file = upload
    document.size = upload.size
    document.save()
    return document


@transaction.atomic
def delete_document(document: Document) -> None:
    document.delete()


@transaction.atomic
def share_document(document: Document, recipient: str, shared_by: User) -> None:
    document_shared.send(
        sender=Document, document=document, recipient=recipient, shared_by=shared_by
    )
