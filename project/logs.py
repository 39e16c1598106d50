"""Log formatting: human-readable by default, one JSON object per line with LOG_FORMAT=json."""

import json
import logging
from datetime import UTC, datetime

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
