"""The benchmark's settings: production's (DEBUG off: Django's debug cursor doubles every SQLite
query), with a fast password hasher, since PBKDF2's ~260 ms per sign-up would drown what is
measured, and email kept in memory. Never for a deployment: production refuses a weak hasher."""

from project.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
# The benchmark signs up hundreds of users from 127.0.0.1: production's abuse limits would
# refuse all but the first 20 (and measure the limit, not the offloading).
RATE_LIMITS = {name: dict.fromkeys(per, 0) for name, per in RATE_LIMITS.items()}  # noqa: F405
# Its tasks (bench/tasks.py, not an app's tasks.py): what its workers import.
CELERY_IMPORTS = ["bench.tasks"]
