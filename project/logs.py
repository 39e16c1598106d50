"""Log formatting: human-readable by default, one JSON object per line with LOG_FORMAT=json.

Access lines (gunicorn's, runserver's) say what matters:
- no bearer link: a share link and a password reset link grant what they name to whoever has
  them, so the request lines show them redacted;
- no line for a live part of a page answering (the activity page's, the documents page's
  counters): each open tab polls them every second.
"""

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


POLLED = frozenset({"/activity/live", "/documents/counters"})  # live.js, every second


def is_poll(path: str, status: int) -> bool:
    """An answer to a live view's poll: not worth a line (its failures are)."""
    return path in POLLED and status < 400


class AccessLog(GunicornLogger):
    """gunicorn's logger (``logger_class`` in gunicorn.conf.py): polls left out, the request
    line, path and referrer redacted."""

    def access(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        if not is_poll(req.path, getattr(resp, "status_code", None) or 500):  # None: an error
            super().access(resp, req, environ, request_time)

    def atoms(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("r", "U", "f"):
            atoms[key] = redact(atoms[key])
        return atoms


class AccessLines(logging.Filter):
    """The same for runserver's request lines (the ``django.server`` logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # ('"%s" %s %s', request line, status, size): "GET /activity/live?x HTTP/1.1"
        line = str(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
        path = line.split(" ")[1].split("?")[0] if line.count(" ") >= 1 else ""
        if is_poll(path, getattr(record, "status_code", None) or 500):
            return False
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
