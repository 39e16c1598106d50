import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_wsgi_application()


def refuse_uncollected_static_files() -> None:
    """With DEBUG off, pages name static files by the hashes in the manifest that collectstatic
    writes: without it every page would answer 500 ("Missing staticfiles manifest entry").
    The web process refuses to start instead, saying what to run."""
    from django.conf import settings
    from django.contrib.staticfiles.storage import ManifestFilesMixin
    from django.core.files.storage import storages

    storage = storages["staticfiles"]
    if isinstance(storage, ManifestFilesMixin) and not storage.exists(storage.manifest_name):
        raise ImproperlyConfigured(
            "static files are not collected: run `python manage.py collectstatic --noinput`"
            f" first (STATIC_ROOT={settings.STATIC_ROOT})"
        )


refuse_uncollected_static_files()
