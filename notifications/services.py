"""The writes behind the API and the pages. Each runs in one transaction, so the signals it
fires record their effects atomically with the change (see offload/outbox.py)."""

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction

from . import tasks
from .models import Document
from .signals import document_shared

User = get_user_model()
CLOSE_ATTEMPTS = 3


class UsernameTaken(Exception):
    pass


class EmailTaken(Exception):
    """Another account has the address (compared case-insensitively)."""

    def __init__(self) -> None:
        super().__init__("Another account has that address.")


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
def change_email(user: User, email: str) -> User:
    """Save the new address; the pre_save receiver compares it with the stored one and offloads
    the notice and the confirmation when it differs."""
    email = User.objects.normalize_email(email)
    # The row locked: two changes of one account run one after the other, so each receiver
    # reads the address the other one left, and every address the account had is told.
    user = User.objects.select_for_update().get(pk=user.pk)
    if User.objects.filter(email__iexact=email).exclude(pk=user.pk).exists():
        raise EmailTaken
    user.email = email
    user.save(update_fields=["email"])
    return user


def close_account(user: User) -> None:
    """Delete the account and, by cascade, everything it owns; its pre_delete receiver offloads
    the goodbye email and the removal of its files.

    A worker can commit a row of this user (a sign-in record) between the cascade's DELETE of
    that table and the commit, which the foreign key then refuses (PostgreSQL). Nothing was
    deleted then: the deletion is tried again, and that try finds the row. Call it outside a
    transaction, since the foreign keys are checked at the commit.

    Two closes of one account at once (a double submit) close it once: the one that finds the
    account gone returns, and the one whose DELETE waited for the other's and then removed
    nothing rolls back the goodbye its pre_delete receiver had recorded.
    """
    pk = user.pk
    for attempt in range(1, CLOSE_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                try:
                    account = User.objects.get(pk=pk)
                except User.DoesNotExist:
                    return  # another close committed first
                _, deleted = account.delete()
                if not deleted.get(User._meta.label):
                    raise _ClosedMeanwhile  # another close deleted it first: roll back ours
            return
        except _ClosedMeanwhile:
            return
        except IntegrityError:
            if attempt == CLOSE_ATTEMPTS:
                raise


class _ClosedMeanwhile(Exception):
    pass


@transaction.atomic
def request_password_reset(users) -> None:
    """One reset email per account (the form found them by address); the worker makes the link."""
    for user in users:
        tasks.send_password_reset_email.offload(user_id=user.pk)


@transaction.atomic
def create_document(owner: User, title: str, file: UploadedFile) -> Document:
    return Document.objects.create(owner=owner, title=title, file=file, size=file.size)


@transaction.atomic
def replace_file(document: Document, upload: UploadedFile) -> Document:
    """Store the new file (its name becomes the document's original_name); the post_save
    receiver offloads deleting the old one."""
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
