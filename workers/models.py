from django.conf import settings
from django.db import models
from django.utils import timezone


class Effect(models.Model):
    """One piece of work a signal asked for, recorded in the transaction that caused it.

    The row, not the broker message, is the source of truth: the message only carries the id.
    A worker claims the row (pending -> running), does the work and marks it done, or sends it
    back to pending for a retry, or dead-letters it after the last attempt.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        DEAD = "dead"

    task = models.CharField(max_length=100)
    args = models.JSONField(default=dict)
    # The user the effect concerns: what /api/me/effects and the activity page list.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="effects",
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["user", "-created_at"], name="effect_user_recent"),
            models.Index(fields=["status", "created_at"], name="effect_status_age"),
        ]

    def __str__(self) -> str:
        return f"{self.task} #{self.pk} ({self.status})"
