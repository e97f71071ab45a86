"""Every config option composes with every other and instantiates; the documented overrides land.

Options are discovered from ``conf/<group>/*.yaml``, so a new option is tested without editing
this file. The full product of the groups is hundreds of compositions (~0.2-0.6 s each), so the
compositions form an all-pairs covering set: every option of every group meets every option of
every other group at least once, which is where cross-group interpolations (``${data.mean}``,
``${model.num_classes}``, ``${paths.output_dir}``, ...) can break.
"""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cifar_lightning.data.batches import to_float_nchw
from cifar_lightning.data.sources import FolderSource, PickleSource, SyntheticSource
from cifar_lightning.module import ClassifierModule, decay_groups
from conftest import CONF, compose_hydra, options

# experiment/ is tested at the end of this file, hparams_search/ in test_search.py; hydra/ and paths/ have one option.
GROUPS = ["data", "model", "aug", "trainer", "callbacks", "module/optimizer", "logger"]


def all_pairs(groups: dict[str, list[str]]) -> list[dict[str, str]]:
    """Greedy all-pairs covering set: rows of one option per group in which every pair of options
    from two different groups occurs together at least once. Deterministic."""
    names = list(groups)

    def pair(g: str, o: str, h: str, p: str) -> tuple:
        return ((g, o), (h, p)) if names.index(g) < names.index(h) else ((h, p), (g, o))

    uncovered = {pair(g, o, h, p) for g, h in combinations(names, 2) for o in groups[g] for p in groups[h]}
    rows = []
    while uncovered:
        (g, o), (h, p) = min(uncovered)
        row = {g: o, h: p}
        for k in names:
            if k not in row:
                row[k] = max(groups[k], key=lambda q: sum(pair(k, q, j, row[j]) in uncovered for j in row))
        uncovered -= {pair(g, row[g], h, row[h]) for g, h in combinations(names, 2)}
        rows.append({k: row[k] for k in names})
    return rows


def test_all_pairs_covers_every_pair() -> None:
    groups = {"a": ["1", "2", "3"], "b": ["x", "y"], "c": ["p", "q", "r", "s"]}
    rows = all_pairs(groups)
    for g, h in combinations(groups, 2):
        assert {(r[g], r[h]) for r in rows} == {(o, p) for o in groups[g] for p in groups[h]}
    assert len(rows) < 3 * 2 * 4  # fewer than the full product


def group_options() -> dict[str, list[str]]:
    return {g: options(g) for g in GROUPS}


def test_discovered_options_include_the_documented_ones() -> None:
    found = group_options()
    assert {"cifar10", "folder", "synthetic"} <= set(found["data"])
    assert {"strided", "dilated"} <= set(found["model"])
    assert {"none", "cutout", "ricap", "mixup", "cutmix"} <= set(found["aug"])
    assert {"default", "cpu", "gpu"} <= set(found["trainer"])
    assert {"sgd", "adamw"} <= set(found["module/optimizer"])


ROWS = all_pairs(group_options())


@pytest.mark.parametrize("choice", ROWS, ids=[",".join(r.values()) for r in ROWS])
def test_composition_resolves_and_instantiates(choice: dict[str, str], compose_task, tmp_path: Path) -> None:
    """One row of the covering set: compose, resolve every interpolation, build the cheap pieces."""
    store = [f"logger.mlflow.save_dir={tmp_path / 'mlruns'}"] if choice["logger"] == "mlflow" else []
    cfg = compose_task([*(f"{g}={o}" for g, o in choice.items()), *store], output_dir=tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # ${hydra:...} included
    assert resolved["paths"]["output_dir"] == str(tmp_path)
    assert resolved["trainer"]["default_root_dir"] == str(tmp_path)

    net = instantiate(cfg.model)
    batch_aug = instantiate(cfg.aug)
    module = instantiate(cfg.module, net=net, batch_aug=batch_aug)
    assert isinstance(module, ClassifierModule) and module.net is net and module.batch_aug is batch_aug
    optimizer = module.optimizer_factory(decay_groups(net, cfg.module.weight_decay))
    assert type(optimizer).__name__.lower() == choice["module/optimizer"]
    assert optimizer.param_groups[0]["lr"] == cfg.module.optimizer.lr
    if module.scheduler_factory is not None:
        module.scheduler_factory(optimizer, total_steps=10).step()

    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    assert all(isinstance(c, pl.Callback) for c in callbacks)
    loggers = [instantiate(lg) for lg in cfg.logger.values()]
    # The trainer option's own settings, on the CPU this test has (gpu/ddp options name other devices).
    trainer = instantiate(cfg.trainer, accelerator="cpu", callbacks=callbacks, logger=loggers)
    assert isinstance(trainer, pl.Trainer) and trainer.max_epochs == cfg.trainer.max_epochs

    source = instantiate(cfg.data.source)
    assert isinstance(source, (PickleSource, FolderSource, SyntheticSource))
    # The option's own loaders and transforms, fed by a tiny generated source instead of files.
    datamodule = instantiate(cfg.data.datamodule, source=SyntheticSource(num_train=40, num_test=8),
                             val_size=8, batch_size=8)
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.dtype == torch.uint8 and tuple(images.shape) == (8, 32, 32, 3)
    x = to_float_nchw(images)
    assert x.shape == (8, 3, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0

    with torch.no_grad():
        out, targets = batch_aug(x, labels)
        assert net.eval()(out).shape == (8, cfg.model.num_classes)
    assert targets.shape == (8, cfg.model.num_classes)


@pytest.mark.parametrize("data", ["cifar10", "folder"])
def test_data_root_reaches_the_source(data: str, compose_task, tmp_path: Path) -> None:
    cfg = compose_task([f"data={data}", f"data.root={tmp_path}"], output_dir=tmp_path)
    assert instantiate(cfg.data.source).root == tmp_path


def test_documented_overrides_compose(compose_task, tmp_path: Path) -> None:
    """The overrides README/CI use: they must exist in the config (or be ++-added) and reach the objects."""
    cfg = compose_task([
        "data=synthetic", "trainer.max_epochs=3", "++trainer.limit_train_batches=5",
        "++trainer.limit_val_batches=2", "++trainer.limit_test_batches=1", "trainer.accelerator=cpu",
        "trainer.devices=1", f"data.root={tmp_path / 'cifar'}", "data.batch_size=7", "seed=5",
    ], output_dir=tmp_path)
    assert cfg.seed == 5
    assert cfg.data.root == str(tmp_path / "cifar")
    assert cfg.data.datamodule.batch_size == 7
    assert isinstance(instantiate(cfg.data.source), SyntheticSource)
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert (trainer.max_epochs, trainer.limit_train_batches, trainer.limit_val_batches,
            trainer.limit_test_batches) == (3, 5, 2, 1)
    assert trainer.num_devices == 1 and type(trainer.accelerator).__name__ == "CPUAccelerator"


def recipe_settings() -> dict[str, object]:
    """The study recipe's own settings (conf/experiment/study.yaml), as dotted keys."""
    recipe = OmegaConf.load(CONF / "experiment" / "study.yaml")
    del recipe["defaults"]

    def leaves(node: object, prefix: str) -> dict[str, object]:
        if not OmegaConf.is_dict(node):
            return {prefix: node}
        return {k: v for key, child in node.items() for k, v in leaves(child, f"{prefix}.{key}".lstrip(".")).items()}
    return leaves(recipe, "")


@pytest.mark.parametrize(("overrides", "choices"), [
    (["+experiment=study", "model=dilated", "aug=cutout"], {"model": "dilated", "aug": "cutout", "data": "cifar10"}),
])
def test_experiment_presets_apply_the_study_recipe(overrides: list[str], choices: dict[str, str]) -> None:
    """A study cell is ``+experiment=study model=... aug=...``."""
    cfg = compose_hydra(overrides)
    settings = recipe_settings()
    assert {"trainer.max_epochs", "module.optimizer.lr", "module.tta_flip"} <= set(settings)
    assert {key: OmegaConf.select(cfg, key) for key in settings} == settings
    assert {group: cfg.hydra.runtime.choices[group] for group in choices} == choices
    assert cfg.hydra.runtime.choices["callbacks"] == "default"


def test_best_composes_to_the_settings_its_shipped_run_used() -> None:
    """weights/best.json names ``+experiment=best``; its run was these overrides of ``fast_cpu``: the two
    must compose to the same config, or the shipped model's one command would train something else."""
    best = compose_hydra(["+experiment=best", "trainer=cpu"])
    spelled_out = compose_hydra(["+experiment=fast_cpu", "trainer=cpu", "data.batch_size=256", "module.optimizer.lr=0.1",
                                 "data.val_size=0", "trainer.max_epochs=150",
                                 "module.tta_shifts=[[1,0],[-1,0],[0,1],[0,-1]]"])
    for cfg in (best, spelled_out):
        del cfg.hydra
    assert OmegaConf.to_yaml(best) == OmegaConf.to_yaml(spelled_out)


def test_study_cpu_is_the_study_recipe_with_the_cpu_settings_of_its_summary() -> None:
    """docs/study_summary.md gives ``+experiment=study_cpu`` as the study on CPU: it must stay the study's
    recipe plus the CPU settings spelled out there, run as two 1-thread jobs at a time."""
    cell = ["model=dilated", "aug=ricap"]
    preset = compose_hydra(["+experiment=study_cpu", *cell])
    spelled_out = compose_hydra(["+experiment=study", *cell, "trainer=cpu", "data=cifar10_gpu", "cpu_threads=1",
                                 "data.batch_size=128", "module.optimizer.lr=0.05", "trainer.max_epochs=35"])
    launcher = preset.hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == 2
    for cfg in (preset, spelled_out):
        del cfg.hydra
    assert OmegaConf.to_yaml(preset) == OmegaConf.to_yaml(spelled_out)


def test_fast_cpu_preset_is_the_cpu_layout_on_device_resident_data() -> None:
    """``+experiment=fast_cpu``: model=strided on resident data (crop + flip, no worker processes to share
    the cores), no batch regularizer, all training images at batch 128, 10-view TTA, 90 epochs."""
    cfg = compose_hydra(["+experiment=fast_cpu"])
    choices = {group: cfg.hydra.runtime.choices[group] for group in ("model", "data", "aug")}
    assert choices == {"model": "strided", "data": "cifar10_gpu", "aug": "none"}
    assert (cfg.trainer.max_epochs, cfg.data.batch_size, cfg.data.val_size, cfg.module.optimizer.lr) == (90, 128, 0, 0.05)
    assert (cfg.module.label_smoothing, cfg.module.tta_flip, len(cfg.module.tta_shifts)) == (0.1, True, 4)


@pytest.mark.parametrize(("debug", "expected"), [
    ("fdr", {"fast_dev_run": True}),
    ("limit", {"max_epochs": 3, "limit_train_batches": 5}),
    ("overfit", {"overfit_batches": 2}),
    ("profiler", {"max_epochs": 1}),
])
def test_debug_options_set_up_their_trainer_in_outputs_debug(debug: str, expected: dict, compose_task,
                                                             tmp_path: Path) -> None:
    """debug=<option>, as in the Lightning-Hydra template: its trainer settings, a run directory apart from results."""
    cfg = compose_task([f"debug={debug}"], output_dir=tmp_path)
    from hydra.core.hydra_config import HydraConfig

    assert HydraConfig.get().run.dir.startswith("outputs/debug/")
    trainer = instantiate(cfg.trainer, accelerator="cpu", logger=False)
    for key, value in expected.items():
        assert cfg.trainer[key] == value
    if debug == "overfit":  # memorizing two batches: no batch regularizer in the way
        assert cfg.aug._target_.endswith("NoBatchAug")
    if debug == "profiler":
        assert type(trainer.profiler).__name__ == "SimpleProfiler"


# Files in a group that are shared settings, not options a user picks.
NOT_OPTIONS = {"debug": {"default"}}
HELP_GROUPS = ["data", "model", "aug", "module/optimizer", "module/distill", "trainer", "callbacks", "logger",
               "debug", "hparams_search", "experiment"]


def test_help_lists_every_option_of_every_group_once() -> None:
    """``python train.py --help`` is our own one-line-per-group text, kept in step with conf/: a new option
    shows up in it or fails here; non-options (data/common, paths) are not offered; experiment needs its +."""
    from conftest import compose_hydra

    text = compose_hydra().hydra.help.template
    assert "$CONFIG" not in text and "$APP_CONFIG_GROUPS" not in text  # not Hydra's 200-line dump
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ") and line.strip()}
    for group in HELP_GROUPS:
        name = "+experiment" if group == "experiment" else group
        listed = lines[name].split()[1:]
        for option in set(options(group)) - NOT_OPTIONS.get(group, set()):
            assert any(word.strip(",*") == option for word in listed), (group, option)
    assert "paths" not in lines and "common" not in text.replace("commands", "")
