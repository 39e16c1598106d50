"""Log formatting: human-readable by default, one JSON object per line with LOG_FORMAT=json."""

import json
import logging
from datetime import UTC, datetime


class JSONFormatter(logging.Formatter):
    """``{"time", "level", "logger", "process", "message", ...}``; effect lines also carry their
    ``key=value`` pairs as fields (effect, task, user, attempt, outcome, duration_ms)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": message,
        }
        if message.startswith("effect="):
            entry.update(
                pair.split("=", 1) for pair in message.split(" ") if "=" in pair and "'" not in pair
            )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
