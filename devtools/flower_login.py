"""Flower's login under `make run`, printed once at start-up.

FLOWER_BASIC_AUTH from .env (honcho hands .env to every process, over the environment), else
from the environment, else one made up the first time and kept in var/flower-login. Prints the
value on stdout for the Makefile to export, and where to log in on stderr.
"""

import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEPT = ROOT / "var" / "flower-login"


def from_dotenv() -> str | None:
    dotenv = ROOT / ".env"
    if not dotenv.exists():
        return None
    for line in dotenv.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "FLOWER_BASIC_AUTH" and value.strip():
            return value.strip()
    return None


def login() -> str:
    if found := from_dotenv() or os.environ.get("FLOWER_BASIC_AUTH"):
        return found
    if not KEPT.exists():
        KEPT.parent.mkdir(exist_ok=True)
        KEPT.touch(mode=0o600)
        KEPT.write_text(f"admin:{secrets.token_urlsafe(12)}\n")
    return KEPT.read_text().strip()


if __name__ == "__main__":
    value = login()
    user, _, password = value.partition(":")
    print(f"Flower: http://127.0.0.1:5555 (user {user}, password {password})", file=sys.stderr)
    print(value)
