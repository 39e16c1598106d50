#!/usr/bin/env python
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        settings.SECRET_KEY  # noqa: B018 - loads the settings: a refusal is one line, no traceback
    except ImproperlyConfigured as refused:
        sys.exit(f"refusing to start: {refused}")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
