"""One log line per step of an effect: ``effect=12 task=send_welcome_email ... step=done`` as text,
and the same fields on the log record (``extra=``) for a structured formatter to read."""

import logging
from typing import Any


def log_step(logger: logging.Logger, level: int, **fields: Any) -> None:
    if not logger.isEnabledFor(level):
        return
    message = " ".join(
        f"{name}=%({name})r" if isinstance(value, str) and " " in value else f"{name}=%({name})s"
        for name, value in fields.items()
    )
    logger.log(level, message, fields, extra=fields)
