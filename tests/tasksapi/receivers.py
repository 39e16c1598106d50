from django.db.models.signals import post_save
from django.dispatch import receiver

from .models import Order
from .tasks import process_order


@receiver(post_save, sender=Order, dispatch_uid="tasksapi.process_new_order")
def process_new_order(sender, instance, created, raw=False, **kwargs):
    # Recorded in the order's transaction; run by a worker once it commits.
    if created and not raw:
        process_order.enqueue(order_id=instance.pk)
