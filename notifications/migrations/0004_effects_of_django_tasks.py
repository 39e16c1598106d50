"""The welcome email and the sign-out record became django.tasks tasks (notifications/tasks.py):
their ledger rows now name them by module path and store {"args": [], "kwargs": {...}}. Rows
recorded before keep running (a pending one would otherwise wait for a task no worker knows)
and keep their place on the activity page."""

from django.db import migrations

RENAMED = {
    "send_welcome_email": "notifications.tasks.send_welcome_email",
    "record_logout": "notifications.tasks.record_logout",
}


def rename(apps, schema_editor, names: dict[str, str], to_django: bool) -> None:
    Effect = apps.get_model("workers", "Effect")
    batch = []
    for effect in Effect.objects.filter(task__in=list(names)).iterator(chunk_size=500):
        effect.task = names[effect.task]
        effect.args = {"args": [], "kwargs": effect.args} if to_django else effect.args["kwargs"]
        batch.append(effect)
        if len(batch) == 500:
            Effect.objects.bulk_update(batch, ["task", "args"])
            batch = []
    Effect.objects.bulk_update(batch, ["task", "args"])


def forwards(apps, schema_editor):
    rename(apps, schema_editor, RENAMED, to_django=True)


def backwards(apps, schema_editor):
    rename(apps, schema_editor, {new: old for old, new in RENAMED.items()}, to_django=False)


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0003_document_random_names"),
        ("workers", "0004_tasks_api"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
