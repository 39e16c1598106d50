from django.db import models


class Order(models.Model):
    # What process_order does with it: "ok", "fail" (raises), "slow" (takes a few seconds).
    kind = models.CharField(max_length=10, default="ok")
    total = models.IntegerField(default=0)
    # Written by the task: how many times it ran to the end, and when it last did.
    runs = models.IntegerField(default=0)
    processed_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"order {self.pk} ({self.kind})"
