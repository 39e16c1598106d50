from django.apps import AppConfig


class OffloadConfig(AppConfig):
    name = "offload"
    # The label of the app before it became a reusable package: its table (workers_effect)
    # and migration history keep their names, so existing databases migrate cleanly.
    label = "workers"
    verbose_name = "Offloaded effects"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
