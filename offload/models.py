from celery import current_app
from django.conf import settings
from django.db import models
from django.utils import timezone


class Effect(models.Model):
    """One piece of work a signal asked for, recorded in the transaction that caused it.

    The row, not the broker message, is the source of truth: the message only carries the id.
    A worker claims the row (pending -> running) with a lease that it renews while the work
    runs, does the work and marks it done (or skipped, with the reason, when its subject had
    gone), or sends it back to pending with the time of its retry, or dead-letters it after
    the last attempt.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        # Ended without doing its work, because what it was about had gone (the reason says
        # what): a document deleted before its share email, a user before their welcome.
        SKIPPED = "skipped"
        DEAD = "dead"

    # The task's name: a Celery task's name, or a django.tasks task's module path.
    task = models.CharField(max_length=200)
    # What the task is called with. For a django.tasks task: {"args": [...], "kwargs": {...}}.
    args = models.JSONField(default=dict)
    # The Celery queue its message goes to; empty: the task's route (CELERY_TASK_ROUTES).
    queue = models.CharField(max_length=100, blank=True)
    # The user the effect concerns: what /api/me/effects and the activity page list.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="effects",
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    # Set for tasks that coalesce (EffectTask.coalesce): a second request for the same work
    # while one is still pending is folded into it.
    key = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # Every failed attempt's error: [{"exception_class_path", "traceback"}], oldest first.
    errors = models.JSONField(default=list, blank=True)
    # The worker of every attempt (Celery's node name), oldest first.
    workers = models.JSONField(default=list, blank=True)
    # What a django.tasks task returned (JSON), once done.
    result = models.JSONField(null=True, blank=True)
    # Why a skipped effect did nothing.
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # When its id was last sent to the broker. Set with the row, for the publish that follows
    # the commit; NULL when that publish failed (Redis down) or after a failed attempt: the
    # relay publishes it. A publish that never happened (the process died) is found as lost.
    published_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)  # claimed by the latest attempt
    # While running: until when the attempt's claim holds (renewed every third of the lease);
    # past it, the attempt's worker is gone and another may take the effect over.
    leased_until = models.DateTimeField(null=True, blank=True)
    # While pending: not before this time (the backoff after a failed attempt, or a django.tasks
    # task's run_after); the relay publishes it then.
    retry_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["user", "-created_at"], name="effect_user_recent"),
            models.Index(fields=["status", "created_at"], name="effect_status_age"),
            models.Index(
                fields=["key"],
                name="effect_pending_key",
                condition=models.Q(status="pending") & ~models.Q(key=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task} #{self.pk} ({self.status})"

    @property
    def display_status(self) -> str:
        """What a person sees: queued, retrying, running, done, skipped or dead-lettered."""
        if self.status == self.Status.PENDING:
            return "retrying" if self.attempts else "queued"
        return "dead-lettered" if self.status == self.Status.DEAD else self.status

    @property
    def description(self) -> str:
        """What its task says of it (EffectTask.describe): "Share email to bob@example.com"."""
        task = current_app.tasks.get(self.task)
        describe = getattr(task, "describe", None)
        return describe(self.args if isinstance(self.args, dict) else {}) if describe else self.task
