from django.apps import AppConfig


class TasksApiConfig(AppConfig):
    name = "tests.tasksapi"
    label = "tasksapi"

    def ready(self) -> None:
        from . import receivers  # noqa: F401 - connects its @receiver
