"""The command-line tools (cifar_lightning/cli/) turn a user's mistake into one ``error: ...`` line and
exit status 2 through the shared ``errors.exit_on_user_error``, as ``train.py`` does: no traceback."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cifar_lightning.cli import best_params, evaluate, report, soup
from cifar_lightning.errors import EXIT_USER_ERROR
from conftest import run_python

DATA = ["data=synthetic", "data.source.num_train=16", "data.source.num_test=8", "data.val_size=8"]

CASES: dict[str, tuple[Callable, Callable[[Path], list[str]], str]] = {
    "evaluate a missing model": (evaluate.main, lambda d: [str(d / "gone.pt2"), *DATA], "gone.pt2: no such file"),
    "soup of missing models": (soup.main, lambda d: [str(d / "a.pt2"), str(d / "b.pt2"), *DATA], "a.pt2: no such file"),
    "report a folder that is no run": (report.main, lambda d: [str(d)], "neither a run directory"),
    "best_params of an unfinished search": (best_params.main, lambda d: [str(d)], "optimization_results.yaml not found"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_command_reports_a_user_error_in_one_line(case: str, tmp_path: Path, capsys) -> None:
    main, argv, message = CASES[case]
    with pytest.raises(SystemExit) as exit_status:
        main(argv(tmp_path))
    assert exit_status.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err


def test_report_run_as_a_command_writes_one_error_line(tmp_path: Path) -> None:
    """As a user runs it: the command's log (stdout) does not repeat the error on stderr."""
    result = run_python(["-m", "cifar_lightning.cli.report", str(tmp_path)], timeout=300)
    assert result.returncode == EXIT_USER_ERROR
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path}: neither a run directory (.hydra/config.yaml) "
                                                  "nor a sweep directory; pass outputs/runs/<time> or "
                                                  "outputs/multirun/<time>"]
