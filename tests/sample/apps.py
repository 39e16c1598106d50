from django.apps import AppConfig
from django.db.models.signals import post_save


class SampleConfig(AppConfig):
    name = "tests.sample"
    label = "sample"

    def ready(self) -> None:
        from . import receivers
        from .models import Note

        post_save.connect(
            receivers.stamp_new_note, sender=Note, dispatch_uid="sample.stamp_new_note"
        )
