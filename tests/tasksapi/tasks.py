import time

from django.db.models import F
from django.tasks import task
from django.utils import timezone

from .models import Order


@task
def process_order(order_id: int) -> dict[str, int]:
    """Process an order."""
    order = Order.objects.get(pk=order_id)
    if order.kind == "fail":
        raise RuntimeError("the payment service said no")
    if order.kind == "slow":
        time.sleep(4)
    Order.objects.filter(pk=order_id).update(runs=F("runs") + 1, processed_at=timezone.now())
    return {"order": order_id, "total": order.total}
