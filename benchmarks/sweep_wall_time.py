"""(d) Wall time of the study's 4-run sweep (model=strided,dilated x aug=cutout,ricap), one job after
the other (Hydra's basic launcher) vs ``--n-jobs`` at once (hydra/launcher=joblib), each a short run
(``--epochs`` epochs of ``--batches`` batches). Both sweeps run ``train.py`` as a user would, so
process start-up, testing, export and the summary are in the figures.

    python -m benchmarks.sweep_wall_time [--n-jobs 2] [--batches 10] [--root /path/to/cifar10] [--device cuda]
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, device_of, hardware, parser, trainer_option

SWEEP = ["model=strided,dilated", "aug=cutout,ricap"]


def run_sweep(overrides: list[str], sweep_dir: Path) -> tuple[float, list[dict[str, str]]]:
    """Seconds ``python train.py -m ...`` took, and its summary rows; fails loudly if a run failed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "train.py", "-m", *SWEEP, *overrides, f"hydra.sweep.dir={sweep_dir}"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"sweep failed ({result.returncode}):\n{result.stderr[-3000:]}")
    with open(sweep_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    failed = [r for r in rows if r["status"] != "ok"]
    if len(rows) != 4 or failed:
        raise SystemExit(f"expected 4 ok runs in {sweep_dir}/summary.csv, got {rows}")
    return seconds, rows


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.set_defaults(repeats=1)
    p.add_argument("--n-jobs", type=int, default=2, help="concurrent jobs of the joblib launcher")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batches", type=int, default=10, help="train batches per epoch (trainer.limit_train_batches)")
    p.add_argument("--root", help="a CIFAR-10 copy (data.root); default: generated images")
    p.add_argument("--out", help="where the sweeps go (default: a temporary directory, deleted after)")
    args = p.parse_args()
    device = device_of(args.device)
    data = ([f"data.root={args.root}", "data.download=false"] if args.root else
            ["data=synthetic", "data.batch_size=256", "data.source.num_train=5000", "data.val_size=1000",
             "data.source.num_test=1000", "data.num_workers=2"])
    short = [trainer_option(device), *data, f"trainer.max_epochs={args.epochs}",
             f"++trainer.limit_train_batches={args.batches}", "++trainer.limit_val_batches=2",
             "++trainer.limit_test_batches=2", "~callbacks.progress_bar", "++trainer.enable_progress_bar=false"]
    launchers = {"sequential (basic launcher)": [],
                 f"concurrent (joblib, n_jobs={args.n_jobs})": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"]}

    print(f"4-run sweep wall time: {args.epochs} epoch(s) x {args.batches} batches per run, {args.device}, "
          f"{'CIFAR-10 at ' + args.root if args.root else 'generated images'}")
    print(f"hardware: {hardware(device)}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        seconds: dict[str, list[float]] = {name: [] for name in launchers}
        for r in range(args.repeats):
            for i, (name, launcher) in enumerate(launchers.items()):
                took, rows = run_sweep([*short, *launcher], out / f"{r}_{i}")
                seconds[name].append(took)
                speed = sum(float(row["train_images_per_sec"] or 0) for row in rows) / len(rows)
                print(f"  {name:32s} {took:7.1f} s   (mean train img/s per run: {speed:.0f})", flush=True)
    best = {name: min(values) for name, values in seconds.items()}
    sequential, concurrent = best.values()
    for name, value in best.items():
        print(f"{name:34s} best {value:7.1f} s")
    print(f"speed-up of the concurrent sweep: {sequential / concurrent:.2f}x")


if __name__ == "__main__":
    main()
