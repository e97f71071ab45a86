"""User-facing errors: a wrong config value, bad data, a diverged run, a missing checkpoint.

They are reported as one line naming the problem and the fix (``error: ...`` on stderr, exit
status 2) instead of a traceback, which is kept for genuine bugs. Their messages are one line.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from cifar_lightning.data.sources import DatasetError

log = logging.getLogger(__name__)


class UserError(Exception):
    """Something the user can fix; the message says what and how."""


class ConfigError(UserError):
    """A config value that is out of range, inconsistent, or impossible on this machine."""


class DivergenceError(UserError):
    """The training loss became NaN or infinite."""


USER_ERRORS: tuple[type[Exception], ...] = (UserError, DatasetError)
EXIT_USER_ERROR = 2


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def log_to_file(message: str, exc_info: bool = False) -> None:
    """Record an error in the run's log file (train.log) only: the console shows it once, from
    stderr (our ``error:`` line, or Hydra's traceback), not a second time through the log."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, (), sys.exc_info() if exc_info else None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a user error into ``error: <message>`` on stderr and exit status 2 (in train.log too)."""
    try:
        yield
    except USER_ERRORS as error:
        log_to_file(f"{type(error).__name__}: {first_line(error)}")
        print(f"error: {first_line(error)}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
