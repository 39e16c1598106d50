from django.dispatch import Signal

# Sent by the share endpoint and page after a document is shared with an email address.
# Arguments: document (Document), recipient (str, an email address), shared_by (User).
document_shared = Signal()
