"""Third-party loggers whose records may name a patient's file: they never reach our handlers."""

from __future__ import annotations

import logging


def silence_pydicom_logger() -> None:
    """pydicom logs some reading problems itself, naming the file by its full path (which may
    hold a patient's name or id): its records stop at its own logger and never reach ours."""
    logger = logging.getLogger("pydicom")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
