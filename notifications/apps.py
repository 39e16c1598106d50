from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self):
        # Every receiver of the project, in one place. Each only records an effect; the work
        # runs in a Celery worker (see tasks.py and effects.py).
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_in, user_login_failed
        from django.db.models.signals import post_delete, post_save

        from . import receivers
        from .models import Document
        from .signals import document_shared

        User = get_user_model()
        post_save.connect(receivers.welcome_new_user, sender=User, dispatch_uid="welcome_new_user")
        user_logged_in.connect(receivers.record_login, dispatch_uid="record_login")
        user_login_failed.connect(receivers.record_failed_login, dispatch_uid="record_failed_login")
        post_save.connect(
            receivers.delete_replaced_file, sender=Document, dispatch_uid="delete_replaced_file"
        )
        post_delete.connect(
            receivers.delete_removed_file, sender=Document, dispatch_uid="delete_removed_file"
        )
        post_save.connect(
            receivers.refresh_owner_counters, sender=Document, dispatch_uid="refresh_counters_save"
        )
        post_delete.connect(
            receivers.refresh_owner_counters,
            sender=Document,
            dispatch_uid="refresh_counters_delete",
        )
        document_shared.connect(
            receivers.notify_share_recipient, sender=Document, dispatch_uid="notify_share_recipient"
        )
