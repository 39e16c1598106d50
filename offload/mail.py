"""Email as the side effect of an effect."""

from email.utils import parseaddr

from django.core.mail import EmailMessage

from .lease import current_lease
from .ledger import current_claim


def send(message: EmailMessage) -> None:
    """Send ``message`` as the running effect's side effect.

    Its Message-ID is fixed per effect: should a worker die after the SMTP server took the
    message but before the ledger said done, the repeat is recognisably the same message, which
    mail clients and providers fold into one.
    """
    if lease := current_lease.get():
        lease.check()  # a stale attempt stops here, before the one step it cannot take back
    if claim := current_claim.get():
        domain = parseaddr(message.from_email)[1].rpartition("@")[2] or "localhost"
        stamp = f"{claim.created_at:%Y%m%d%H%M%S%f}"
        message.extra_headers.setdefault("Message-ID", f"<effect-{claim.id}.{stamp}@{domain}>")
    message.send()
