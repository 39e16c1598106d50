from django.conf import settings


def links(request):
    """Where the dashboards live, for the navigation bar."""
    return {
        "flower_url": settings.FLOWER_URL,
        "mailpit_url": settings.MAILPIT_URL,
    }
