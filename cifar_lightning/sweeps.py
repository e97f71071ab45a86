"""Read a sweep directory: the comparison table (one row per run, from each run's ``metrics.json``)
and, for a search, the overrides that re-train its best trial.

The table is written by :class:`SweepSummary` when a multirun ends (works with any launcher,
because it only globs files), and rebuilt any time with
``python -m cifar_lightning.cli.summary <sweep_dir>``.

The best trial's overrides (``python -m cifar_lightning.cli.best_params <sweep_dir>``): re-training
drops the search config (conf/hparams_search/), and with it the short trial budget and the options
it picked (such as ``callbacks=ema``). So the overrides repeat the trials' recipe: their choices of
the recipe's config groups and their command-line settings under those groups, with the best
parameters of ``optimization_results.yaml`` in place of the searched ones. Data, trainer and
budget settings stay the re-run's own.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cifar_lightning.errors import RunDirError
from cifar_lightning.io import write_text
from cifar_lightning.plots import write_sweep_curves

COLUMNS = ["run", "model", "aug", "swept", "params", "best_val_acc", "test_acc", "reference_acc", "vs_reference_acc",
           "epochs", "wall_time_s", "train_images_per_sec", "status", "error"]

# The original study's reported test accuracy for the same cell (its write-up), by (model, aug).
REFERENCE_ACC = {("strided", "ricap"): 0.8762, ("strided", "cutout"): 0.8731,
                 ("dilated", "cutout"): 0.7992, ("dilated", "ricap"): 0.8035}

# The config groups of a search's recipe, which re-training its best trial repeats.
RECIPE_GROUPS = ("model", "aug", "module/optimizer", "callbacks")


def with_reference(row: dict[str, Any]) -> dict[str, Any]:
    """Add the study's accuracy for the run's cell and the run's test accuracy minus it."""
    reference = REFERENCE_ACC.get((row.get("model"), row.get("aug")))
    test_acc = row.get("test_acc")
    difference = test_acc - reference if reference is not None and test_acc is not None else None
    return {**row, "reference_acc": reference, "vs_reference_acc": difference}


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every run's metrics under ``sweep_dir``, in job order."""
    rows = []
    for path in sorted(Path(sweep_dir).glob("**/metrics.json")):
        metrics = json.loads(path.read_text())
        rows.append(with_reference({"run": str(path.parent.relative_to(sweep_dir)), **metrics}))
    for job in sorted(p.parent for p in Path(sweep_dir).glob("**/.hydra")):  # every job dir has one
        if not (job / "metrics.json").exists():
            rows.append({"run": str(job.relative_to(sweep_dir)), "status": "failed",
                         "error": "no metrics.json: the job was killed (or is still running)"})
    return sorted(rows, key=lambda r: (r.get("job_num") is None, r.get("job_num") or 0, r["run"]))


def with_swept(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add each run's overrides that not every run shares: what the sweep varied (a search trial's parameters)."""
    overrides = [set(r["overrides"]) for r in rows if r.get("overrides")]
    shared = set.intersection(*overrides) if overrides else set()
    return [{**r, "swept": " ".join(o for o in r.get("overrides") or [] if o not in shared)} for r in rows]


def _short(override: str) -> str:
    """``lr=0.06677511008261823`` -> ``lr=0.06678`` for the table; summary.csv keeps the exact value."""
    key, _, value = override.partition("=")
    try:
        return f"{key}={float(value):.4g}" if "." in value else override
    except ValueError:
        return override


def _cell(value: Any, column: str) -> str:
    if value is None:
        return ""
    if column == "swept":
        return " ".join(_short(o) for o in value.split())
    if column == "vs_reference_acc":
        return f"{100 * value:+.2f}"
    if column.endswith("_acc") and isinstance(value, float):
        return f"{100 * value:.2f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value).replace("|", "\\|")  # an error message must not split the table row


def to_markdown(rows: list[dict[str, Any]]) -> str:
    header = ["run", "model", "aug", "swept overrides", "params", "best val acc (%)", "test acc (%)", "study's acc (%)",
              "test - study (pp)", "epochs", "wall time (s)", "train img/s", "status", "error"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(r.get(c), c) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def report_failures(rows: list[dict[str, Any]], summary: Path) -> int:
    """Name the failed runs on stderr; the exit status a sweep should end with (1 if any failed)."""
    failed = [r for r in rows if r.get("status") != "ok"]
    for row in failed:
        print(f"error: run {row['run']} failed: {row.get('error')}", file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} of {len(rows)} runs failed; see {summary}", file=sys.stderr)
    return int(bool(failed))


def write_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Write ``summary.csv`` and ``summary.md`` into ``sweep_dir``; return the rows."""
    rows = with_swept(collect(sweep_dir))
    write_text(Path(sweep_dir) / "summary.csv", to_csv(rows))
    write_text(Path(sweep_dir) / "summary.md", to_markdown(rows))
    write_sweep_curves(sweep_dir, rows)
    return rows



def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def _in_recipe(override: str) -> bool:
    return _key(override).replace("/", ".").split(".")[0] in {g.split("/")[0] for g in RECIPE_GROUPS}


def best_overrides(sweep_dir: str | Path) -> list[str]:
    """The trials' recipe choices and settings, then the best trial's parameters."""
    sweep = Path(sweep_dir)
    results = sweep / "optimization_results.yaml"
    if not results.is_file():
        raise RunDirError(f"{results} not found: the search has not finished (or is no Optuna search); "
                          "pass the sweep directory of a finished hparams_search run")
    best = OmegaConf.to_container(OmegaConf.load(results).best_params)
    trial = next(sweep.glob("*/.hydra"))  # every trial shares the recipe; only the searched values differ
    choices = OmegaConf.load(trial / "hydra.yaml").hydra.runtime.choices
    recipe = {group: f"{group}={choices[group]}" for group in RECIPE_GROUPS if group in choices}
    recipe.update((_key(o), o) for o in OmegaConf.load(trial / "overrides.yaml") if _in_recipe(o))
    recipe.update((key, f"{key}={value}") for key, value in best.items())
    return list(recipe.values())


class SweepSummary(Callback):
    """Hydra callback: write the comparison table when a multirun ends; exit 1 if any run failed.

    Jobs record their failure in metrics.json and return, so the sweep runs them all; this is
    where a failed sweep becomes a non-zero exit (SystemExit passes through Hydra's callback guard).
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        rows = write_summary(config.hydra.sweep.dir)
        summary = Path(config.hydra.sweep.dir) / "summary.md"
        print(f"Sweep summary ({len(rows)} runs): {summary}")
        print(to_markdown(rows))
        if (Path(config.hydra.sweep.dir) / "optimization_results.yaml").is_file():  # an Optuna search
            retrain = " ".join(best_overrides(config.hydra.sweep.dir))
            print(f"Re-train its best trial at the full budget:\n  python train.py {retrain}")
        if status := report_failures(rows, summary):
            raise SystemExit(status)
