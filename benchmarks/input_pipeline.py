"""(b) Is the input the bottleneck? Images/s of the train loader (the Albumentations pipeline of
conf/data, CIFAR10DataModule's DataLoader) with 0, 1, 2, ... workers, against the images/s of the
model's own training step on in-memory batches (the bare loop of benchmarks/common.py).

    python -m benchmarks.input_pipeline [--workers 0 1 2] [--root /path/to/cifar10] [--device cuda]
"""
from __future__ import annotations

import statistics
import time

from hydra.utils import instantiate
from torch.utils.data import DataLoader

from benchmarks.common import (
    bare_images_per_sec,
    best_and_median,
    device_of,
    hardware,
    load_config,
    parser,
    random_batches,
    trainer_option,
)


def loader_images_per_sec(loader: DataLoader, warmup: int, batches: int) -> float:
    """Images/s drawn from ``loader``; the first ``warmup`` batches (worker start-up) are not timed."""
    images, start = 0, 0.0
    for i, (x, _) in enumerate(loader):
        if i == warmup:
            images, start = 0, time.perf_counter()
        images += len(x)
        if i == warmup + batches - 1:
            return images / (time.perf_counter() - start)
    raise ValueError(f"the loader has fewer than {warmup + batches} batches; lower --batches")


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="data.num_workers values to time")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=20, help="timed loader batches per measurement")
    p.add_argument("--steps", type=int, help="timed model steps (default: 10 on cpu, 200 on cuda)")
    p.add_argument("--root", help="a CIFAR-10 copy (data.root); default: generated images of the same size")
    args = p.parse_args()
    device = device_of(args.device)
    warmup = 2
    steps = args.steps or (200 if device.type == "cuda" else 10)
    images = args.batch_size * (warmup + args.batches)
    data = ([f"data.root={args.root}", "data.download=false"] if args.root else
            ["data=synthetic", f"data.source.num_train={images + 64}", "data.val_size=64"])
    base = [*data, f"data.batch_size={args.batch_size}", trainer_option(device)]
    cfg = load_config(base)
    default_workers = load_config().data.num_workers  # data=cifar10's, whatever --root says

    print(f"Input pipeline vs model step: batch {args.batch_size}, {args.batches} timed loader batches, "
          f"{steps} timed model steps, {args.device}, {'CIFAR-10 at ' + args.root if args.root else 'generated images'}")
    print(f"hardware: {hardware(device)}")
    model = [bare_images_per_sec(cfg, random_batches(args.batch_size, warmup + steps, device, seed=r), device,
                                 warmup, steps)[0] for r in range(args.repeats)]
    print(f"model step (default model, aug {cfg.aug._target_.rsplit('.', 1)[-1]}) img/s: {best_and_median(model)}")
    pipeline = {}
    for workers in args.workers:
        datamodule = instantiate(load_config([*base, f"data.num_workers={workers}"]).data.datamodule)
        datamodule.prepare_data()
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()  # persistent workers: started once, reused by every repeat
        pipeline[workers] = [loader_images_per_sec(loader, warmup, args.batches) for _ in range(args.repeats)]
        ratio = statistics.median(pipeline[workers]) / statistics.median(model)
        print(f"loader, {workers} workers img/s: {best_and_median(pipeline[workers])}   = {ratio:5.1f}x the model step")
    if default_workers in pipeline:
        ratio = statistics.median(pipeline[default_workers]) / statistics.median(model)
        verdict = "the input is NOT the bottleneck" if ratio >= 1 else "the input IS the bottleneck"
        print(f"default data.num_workers={default_workers}: input {ratio:.1f}x the model step ({verdict}; "
              f"target on CPU >= 3x)")


if __name__ == "__main__":
    main()
