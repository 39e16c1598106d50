from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.text


class Stamp(models.Model):
    """Written by the offloaded task: one row per run, so a test can count the runs."""

    note = models.ForeignKey(Note, on_delete=models.CASCADE)
    at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"note {self.note_id} at {self.at}"
