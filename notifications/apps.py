from django.apps import AppConfig

# The welcome receiver's uid: import_users disconnects it by this name.
WELCOME_UID = "welcome_new_user"


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self):
        # Every receiver of the project, in one place. Each only records an effect; the work
        # runs in a Celery worker (see tasks.py and effects.py). connect() with a dispatch_uid
        # here, so that the wiring reads as one table and a command can disconnect a receiver
        # by its uid (import_users); refresh_owner_counters, one receiver of two signals,
        # reads better as @receiver in receivers.py, which this import registers.
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
        from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

        from . import receivers
        from .models import Document
        from .signals import document_shared

        User = get_user_model()
        post_save.connect(receivers.welcome_new_user, sender=User, dispatch_uid=WELCOME_UID)
        pre_save.connect(
            receivers.notify_email_change, sender=User, dispatch_uid="notify_email_change"
        )
        pre_delete.connect(receivers.say_goodbye, sender=User, dispatch_uid="say_goodbye")
        user_logged_in.connect(receivers.record_login, dispatch_uid="record_login")
        user_logged_out.connect(receivers.record_logout, dispatch_uid="record_logout")
        user_login_failed.connect(receivers.record_failed_login, dispatch_uid="record_failed_login")
        post_save.connect(
            receivers.delete_replaced_file, sender=Document, dispatch_uid="delete_replaced_file"
        )
        post_delete.connect(
            receivers.delete_removed_file, sender=Document, dispatch_uid="delete_removed_file"
        )
        document_shared.connect(
            receivers.notify_share_recipient, sender=Document, dispatch_uid="notify_share_recipient"
        )
