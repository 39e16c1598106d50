"""Log formatting: human-readable by default, one JSON object per line with LOG_FORMAT=json.
And no bearer link in an access log: a share link and a password reset link grant what they
name to whoever has them, so gunicorn's and runserver's request lines show them redacted."""

import json
import logging
import re
from datetime import UTC, datetime

from gunicorn.glogging import Logger as GunicornLogger

# /shared/<signed token> and /password/reset/<uidb64>/<token>/ (not its set-password step).
_BEARER_PATHS = re.compile(
    r"(/shared/)[^/?\s\"]+|(/password/reset/[^/?\s\"]+/)(?!set-password/)[^/?\s\"]+"
)


def redact(text: str) -> str:
    """``text`` with the secret part of any share or password-reset link replaced."""
    return _BEARER_PATHS.sub(lambda m: (m.group(1) or m.group(2)) + "[redacted]", text)


class RedactedAccessLog(GunicornLogger):
    """gunicorn's logger (``logger_class`` in gunicorn.conf.py), its request line, path and
    referrer redacted."""

    def atoms(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("r", "U", "f"):
            atoms[key] = redact(atoms[key])
        return atoms


class RedactBearerLinks(logging.Filter):
    """The same for runserver's request lines (the ``django.server`` logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


# What every log record carries; anything else on a record was passed as ``extra=``.
STANDARD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    """``{"time", "level", "logger", "process", "message", ...}``, plus the fields a line was
    logged with (``extra=``): an effect's lines carry effect, task, user, attempt, step,
    duration_ms and error as fields of their own."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in STANDARD_FIELDS)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
