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


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a user error into ``error: <message>`` on stderr and exit status 2 (logged too)."""
    try:
        yield
    except USER_ERRORS as error:
        if logging.getLogger().handlers:  # into train.log; before Hydra set logging up, stderr has it below
            log.error("%s: %s", type(error).__name__, first_line(error))
        print(f"error: {first_line(error)}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
