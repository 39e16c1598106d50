import posixpath
from datetime import timedelta
from uuid import uuid4

from django.conf import settings
from django.core import signing
from django.db import models
from django.utils import timezone


class Profile(models.Model):
    """Per-user counters, kept by offloaded tasks and always recomputed from their source rows,
    so running a refresh twice gives the same numbers."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    document_count = models.PositiveIntegerField(default=0)
    storage_bytes = models.PositiveBigIntegerField(default=0)
    login_count = models.PositiveIntegerField(default=0)
    last_login_at = models.DateTimeField(null=True, blank=True)
    last_login_ip = models.GenericIPAddressField(null=True, blank=True)

    def __str__(self) -> str:
        return f"profile of {self.user}"


SHARE_LINK_SALT = "notifications.document-share"


def stored_name(document: "Document", filename: str) -> str:
    """A random name: nothing the uploader chose reaches the file system, and no one can guess
    another's. The name it was uploaded with is kept as ``original_name``."""
    return f"documents/{uuid4().hex}"


class Document(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="documents"
    )
    title = models.CharField(max_length=200)
    # Served only through the application (views.download, views.shared_download), as an
    # attachment: nothing under MEDIA_ROOT has a URL.
    file = models.FileField(upload_to=stored_name, max_length=255)
    original_name = models.CharField(max_length=255, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    # The file name as last read from or written to the database: a receiver compares it with
    # the current one to see that the file was replaced and which name to clean up, without
    # trusting anything the request sent.
    stored_file_name: str | None = None

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.title

    def save(self, *args, **kwargs):
        if self.file and not self.file._committed:  # a new upload, still under its own name
            self.original_name = posixpath.basename(self.file.name)[:255]
        super().save(*args, **kwargs)
        self.stored_file_name = self.file.name

    def share_token(self) -> str:
        """What a share link carries: this document and its file as they are now, signed (the
        link expires after SHARE_LINK_MAX_AGE; views.shared_download checks both)."""
        return signing.dumps([self.pk, self.file.name], salt=SHARE_LINK_SALT, compress=True)

    @classmethod
    def from_db(cls, db, field_names, values, **kwargs):
        instance = super().from_db(db, field_names, values, **kwargs)
        if "file" in field_names:
            instance.stored_file_name = instance.file.name
        return instance


class LoginActivity(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="login_activity"
    )
    at = models.DateTimeField()
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    new_device = models.BooleanField(default=False)
    # A random id the session carries from sign-in to sign-out (never the session key, which
    # is a credential): the sign-out finds its sign-in record by it.
    sign_in = models.CharField(max_length=32, blank=True, editable=False)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-at"]
        verbose_name_plural = "login activity"
        indexes = [models.Index(fields=["user", "-at"], name="login_user_recent")]

    def __str__(self) -> str:
        return f"{self.user} at {self.at:%Y-%m-%d %H:%M} from {self.ip}"

    @property
    def duration(self) -> timedelta | None:
        """How long the session lasted, to the second; None until it was signed out of."""
        if self.ended_at is None:
            return None
        return timedelta(seconds=round((self.ended_at - self.at).total_seconds()))


class FailedLogin(models.Model):
    """A failed sign-in. Holds a keyed hash of the username tried, never the username as typed
    and never the password."""

    at = models.DateTimeField()
    ip = models.GenericIPAddressField(null=True, blank=True)
    username_hash = models.CharField(max_length=64)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="failed_logins",
    )
    alerted = models.BooleanField(default=False)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["username_hash", "-at"], name="failed_login_recent")]

    def __str__(self) -> str:
        return f"failed sign-in at {self.at:%Y-%m-%d %H:%M} from {self.ip}"
