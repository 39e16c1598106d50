"""The benchmark's settings: production's (DEBUG off: Django's debug cursor doubles every SQLite
query), with a fast password hasher, since PBKDF2's ~260 ms per sign-up would drown what is
measured, and email kept in memory. Never for a deployment: production refuses a weak hasher."""

from project.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
