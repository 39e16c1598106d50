from django.conf import settings


def links(request):
    """Where the dashboards live, for the navigation bar."""
    return {
        "flower_url": settings.FLOWER_URL,
        "mailpit_url": settings.MAILPIT_URL,
        # /dev/mail/: development's mailbox, where email goes with DEBUG on and no EMAIL_URL.
        "dev_mail": settings.DEBUG
        and settings.MAILERS["default"]["BACKEND"] == "project.devmail.EmailBackend",
    }
