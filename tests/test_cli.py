"""The command-line tools (cifar_lightning/cli/) turn a user's mistake into one ``error: ...`` line and
exit status 2 through the shared ``errors.exit_on_user_error``, as ``train.py`` does: no traceback, and
no second copy of the error from the command's own log."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from cifar_lightning.cli import best_params, evaluate, report, soup
from cifar_lightning.errors import EXIT_USER_ERROR

DATA = ["data=synthetic", "data.source.num_train=16", "data.source.num_test=8", "data.val_size=8"]

CASES: dict[str, tuple[Callable, Callable[[Path], list[str]], str]] = {
    "evaluate a missing model": (evaluate.main, lambda d: [str(d / "gone.pt2"), *DATA], "gone.pt2: no such file"),
    "soup of missing models": (soup.main, lambda d: [str(d / "a.pt2"), str(d / "b.pt2"), *DATA], "a.pt2: no such file"),
    "report a folder that is no run": (report.main, lambda d: [str(d)], "neither a run directory"),
    "best_params of an unfinished search": (best_params.main, lambda d: [str(d)], "optimization_results.yaml not found"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_command_reports_a_user_error_in_one_line(case: str, tmp_path: Path, capsys, monkeypatch) -> None:
    # The root logger as a command starts with it (pytest's capture handler would swallow a log line).
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging.root, "level", logging.root.level)
    main, argv, message = CASES[case]
    with pytest.raises(SystemExit) as exit_status:
        main(argv(tmp_path))
    assert exit_status.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err

