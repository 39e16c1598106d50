from django.apps import AppConfig


class OffloadConfig(AppConfig):
    name = "offload"
    # The label of the app before it became a reusable package: its table (workers_effect)
    # and migration history keep their names, so existing databases migrate cleanly.
    label = "workers"
    verbose_name = "Offloaded effects"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from celery.signals import worker_process_init, worker_ready, worker_shutting_down
        from django.core.signals import request_finished, request_started

        from . import (
            checks,  # noqa: F401 - registers the system checks
            gate,
            lease,
            outbox,
            relay,
        )

        # Effects committed in a web request are published once its response is sent.
        request_started.connect(outbox.hold_until_response, dispatch_uid="offload.outbox")
        request_finished.connect(outbox.publish_after_response, dispatch_uid="offload.outbox")

        # Every worker runs the relay (one at a time relays): recovery needs no other process.
        worker_ready.connect(relay.start_in_worker, weak=False, dispatch_uid="offload.relay")
        worker_shutting_down.connect(relay.stop_in_worker, weak=False, dispatch_uid="offload.relay")
        worker_ready.connect(gate.start_in_worker, weak=False, dispatch_uid="offload.gate")
        worker_shutting_down.connect(gate.stop_in_worker, weak=False, dispatch_uid="offload.gate")
        worker_process_init.connect(
            lease.enforce_time_limits, weak=False, dispatch_uid="offload.lease"
        )
