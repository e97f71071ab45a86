"""Time to accuracy: what a preset costs on the machine at hand to reach a given accuracy.

Trains a preset with ``train.py`` (its own process, as a user would run it) and prints the train
images/s, the epoch time, the wall minutes from process start at which validation accuracy first
reaches each threshold, the whole run's minutes and the test accuracy. ``--versus`` trains a second
preset afterwards (never at the same time: they would share the cores) and prints both side by side.
``--run-dir`` reads runs that already finished instead (their start is when Hydra wrote
``.hydra/config.yaml``, a few seconds after the process started).

    python -m benchmarks.time_to_accuracy +experiment=fast_cpu trainer=cpu data.val_size=5000 data.root=/path/to/cifar10 \\
        --versus "+experiment=fast_cpu trainer=cpu data.val_size=5000 model=strided_c1wide data.root=/path/to/cifar10"
    python -m benchmarks.time_to_accuracy --run-dir outputs/runs/<a> outputs/runs/<b>

It prints figures; it is not a timed test. Validation accuracy is the run's own (with its test-time
augmentation); a run with ``data.val_size=0`` has none, so only its test accuracy is printed.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import ROOT, hardware

THRESHOLDS = (0.80, 0.85, 0.876)


@dataclass
class Timeline:
    """One finished run: when it started, and (wall time, accuracy) after each validation."""

    name: str
    start: float
    val_acc: list[tuple[float, float]]
    metrics: dict

    def minutes_to(self, threshold: float) -> float | None:
        return next(((t - self.start) / 60 for t, acc in self.val_acc if acc >= threshold), None)


def val_acc_events(run_dir: Path) -> list[tuple[float, float]]:
    """``val/acc`` as (wall-clock time it was logged, value) from the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    if "val/acc" not in accumulator.Tags()["scalars"]:
        return []
    return sorted((e.wall_time, e.value) for e in accumulator.Scalars("val/acc"))


def read_run(run_dir: Path, start: float | None = None) -> Timeline:
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise SystemExit(f"error: {run_dir} has no metrics.json: give a finished run directory")
    metrics = json.loads(metrics_file.read_text())
    if metrics.get("status") != "ok":
        raise SystemExit(f"error: {run_dir} did not finish ({metrics.get('error', metrics.get('status'))})")
    if start is None:
        start = (run_dir / ".hydra" / "config.yaml").stat().st_mtime
    overrides = " ".join(metrics.get("overrides") or []) or str(run_dir)
    return Timeline(overrides, start, val_acc_events(run_dir), metrics)


def train(overrides: list[str], run_dir: Path) -> Timeline:
    """Run ``train.py`` with ``overrides`` into ``run_dir``; the clock starts before the process does."""
    start = time.time()
    command = [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"]
    print("$", shlex.join(command), flush=True)
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        raise SystemExit(f"error: the run failed; see {run_dir}/train.log")
    return read_run(run_dir, start)


def report(timelines: list[Timeline], thresholds: list[float]) -> str:
    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = [("train images/s", lambda t: cell(t.metrics.get("train_images_per_sec"), ",.0f")),
            ("epoch time (s)", lambda t: cell(t.metrics.get("epoch_time_s"), ".1f")),
            ("epochs", lambda t: str(t.metrics.get("epochs"))),
            *((f"minutes to val acc {100 * thr:.1f}%", lambda t, thr=thr: cell(t.minutes_to(thr), ".1f"))
              for thr in thresholds),
            ("best val acc (%)", lambda t: cell(max((a for _, a in t.val_acc), default=None), ".2%").rstrip("%")),
            ("whole run (min)", lambda t: cell(t.metrics.get("wall_time_s", 0) / 60, ".1f")),
            ("test acc (%)", lambda t: cell(t.metrics.get("test_acc"), ".2%").rstrip("%")),
            ("params", lambda t: f"{t.metrics.get('params'):,}")]
    header = "| | " + " | ".join(f"`{t.name}`" for t in timelines) + " |"
    lines = [header, "|---" * (len(timelines) + 1) + "|"]
    lines += ["| " + label + " | " + " | ".join(value(t) for t in timelines) + " |" for label, value in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="train.py overrides of the preset to time")
    p.add_argument("--versus", help="overrides of a second preset, in one quoted string")
    p.add_argument("--run-dir", nargs="+", type=Path, help="read finished runs instead of training")
    p.add_argument("--thresholds", nargs="+", type=float, default=list(THRESHOLDS))
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "time_to_accuracy" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    args = p.parse_args()
    if args.run_dir:
        timelines = [read_run(d) for d in args.run_dir]
    elif args.overrides:
        presets = [args.overrides] + ([shlex.split(args.versus)] if args.versus else [])
        timelines = [train(o, args.out / f"preset{i}") for i, o in enumerate(presets)]
    else:
        raise SystemExit("error: give train.py overrides (e.g. +experiment=fast_cpu trainer=cpu) or --run-dir DIR")
    print(f"hardware: {hardware(torch.device('cpu'))}")
    print(report(timelines, args.thresholds))


if __name__ == "__main__":
    main()
