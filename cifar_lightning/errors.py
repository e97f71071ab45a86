"""Every error class of the project: a wrong config value, bad data, a diverged run, a missing checkpoint.

All derive from :class:`UserError`: something the user can fix. They are reported as one line naming the problem and the fix (``error: ...`` on stderr, exit
status 2) by :func:`exit_on_user_error`, which ``train.py`` and every command in
:mod:`cifar_lightning.cli` exit through, instead of a traceback, which is kept for genuine bugs.
Their messages are one line. This module imports nothing of the project, so any module may raise them.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class UserError(Exception):
    """Something the user can fix; the message says what and how."""


class ConfigError(UserError):
    """A config value that is out of range, inconsistent, or impossible on this machine."""


class DivergenceError(UserError):
    """The training loss became NaN or infinite."""


class DatasetError(UserError):
    """The dataset's files are missing or unreadable; the message names the path and the fix."""


class ResumeError(UserError):
    """The run or checkpoint to resume from is missing or unreadable."""


class WarmStartError(UserError):
    """The weights to start from are missing, unreadable or do not fit the network."""


class RunDirError(UserError):
    """A run or sweep directory lacks a file a command reads from it (a model, a checkpoint, search results)."""

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
    except UserError as error:
        log_to_file(f"{type(error).__name__}: {first_line(error)}")
        print(f"error: {first_line(error)}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
