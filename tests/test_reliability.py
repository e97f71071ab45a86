"""What happens when things go wrong: bad config values, bad data or output directories, unsafe
checkpoints, a killed run, a diverging run, a failing sweep job, and repeatability.

Trainings use tiny synthetic data (conftest.TINY); the command-line behaviour is checked on
``python train.py`` subprocesses, started together where they are independent.
"""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from torch import nn

from cifar_lightning import training, validation
from cifar_lightning.callbacks.random_state import RandomState
from cifar_lightning.callbacks.speed import TrainSpeed
from cifar_lightning.data.sources import SyntheticSource
from cifar_lightning.errors import ConfigError, DivergenceError, ResumeError, first_line
from cifar_lightning.models.net import count_parameters
from cifar_lightning.module import ClassifierModule
from cifar_lightning.resume import checkpoint_path, resume_argv
from cifar_lightning.training import load_weights
from cifar_lightning.validation import either, index_list, integer, number, one_of, optional, triple
from conftest import ROOT, TINY, clear_hydra, options, task_config

# Epochs of two batches each: the run is killed once the first epoch's last.ckpt is there.
EPOCHS = 3
RESUMABLE = [*TINY, f"trainer.max_epochs={EPOCHS}", "trainer=deterministic"]
COMPARED = ("test_acc", "test_loss", "best_val_acc", "epochs")
OUTPUT_DIR_FIX = "pass hydra.run.dir=<a writable directory> (hydra.sweep.dir= with -m)"


def popen(args: Sequence[str]) -> subprocess.Popen:
    """``python <args>`` from the repository root, output captured as text."""
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "HYDRA_FULL_ERROR": "0"})


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def train_in_process(overrides: Sequence[str], output_dir: Path) -> dict:
    """``run()`` as train.py calls it, less the model.pt2 export: seconds per run, and no metric depends on it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "export_model", lambda net, path, **_: None)
        try:
            training.run(task_config(overrides, output_dir))
        finally:
            clear_hydra()
    return json.loads((output_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted deterministic run: the reference for the repeat and the resumed run."""
    return train_in_process(RESUMABLE, tmp_path_factory.mktemp("baseline"))


@pytest.fixture
def compose(tmp_path: Path):
    yield lambda overrides=(): task_config([*TINY, *overrides], tmp_path)
    clear_hydra()


# --------------------------------------------------------------------------- 1. validation


@pytest.mark.parametrize(("overrides", "expected"), [
    (["data.batch_size=0"], "data.batch_size=0: must be an integer >= 1"),
    (["data.batch_size=abc"], "data.batch_size='abc': must be an integer >= 1"),
    (["aug=ricap", "aug.beta=-1"], "aug.beta=-1: must be a number > 0"),
    (["aug=cutout", "aug.p=1.5"], "aug.p=1.5: must be a number in [0, 1]"),
    (["aug=cutout", "aug.size=40"], "aug.size=40: must be an integer in [1, 32]"),
    (["aug=mixup", "aug.alpha=0"], "aug.alpha=0: must be a number > 0"),
    (["module.label_smoothing=1.0"], "module.label_smoothing=1.0: must be a number in [0, 1)"),
    (["module.optimizer.lr=0"], "module.optimizer.lr=0: must be a number > 0"),
    (["module.optimizer.lr=nan"], "module.optimizer.lr=nan: must be a number > 0"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0: must be an integer >= 1"),
    (["trainer.precision=fp8"], "trainer.precision='fp8': must be one of"),
    (["++trainer.limit_train_batches=1.5"], "trainer.limit_train_batches=1.5: must be an integer >= 0 or a number in [0, 1]"),
    (["trainer.devices=4096"], "trainer.devices=4096: this machine has"),
    (["max_params=0"], "max_params=0: must be null or an integer >= 1"),
    (["module.finite_check_every_n_steps=0"], "module.finite_check_every_n_steps=0: must be an integer >= 1"),
    (["module.tta_shifts=[[1,2,3]]"], "module.tta_shifts=[[1, 2, 3]]: must be a list of [dx, dy] pixel shifts"),
    (["module.tta_shifts=[[0,9]]"], "module.tta_shifts=[[0, 9]]: must be a list of [dx, dy] pixel shifts, each in [-8, 8]"),
])
def test_bad_values_are_rejected_in_one_line(compose, overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        validation.validate_config(compose(overrides))
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_every_problem_is_reported_on_the_same_line(compose) -> None:
    with pytest.raises(ConfigError) as error:
        validation.validate_config(compose(["data.batch_size=0", "trainer.max_epochs=-3"]))
    assert str(error.value) == ("data.batch_size=0: must be an integer >= 1; "
                                "trainer.max_epochs=-3: must be an integer >= 1")


@pytest.mark.parametrize(("build", "allowed", "good", "bad"), [
    (lambda: integer(1), "an integer >= 1", [1, 7], [0, -1, True, 1.0, "1", None]),
    (lambda: integer(1, 32), "an integer in [1, 32]", [1, 32], [0, 33]),
    (lambda: number(0.0), "a number >= 0", [0, 0.0, 1e9], [-1e-9, True, "0", None, math.nan, math.inf]),
    (lambda: number(0.0, low_open=True), "a number > 0", [1e-9, 3], [0, 0.0, -1]),
    (lambda: number(0.0, 1.0), "a number in [0, 1]", [0, 0.5, 1], [-0.1, 1.1, math.nan]),
    (lambda: number(0.0, 1.0, high_open=True), "a number in [0, 1)", [0.0, 0.999], [1, 1.0]),
    (lambda: number(0.0, 1.0, low_open=True, high_open=True), "a number in (0, 1)", [0.5], [0.0, 1.0]),
    (lambda: one_of(["auto", 2]), "one of auto, 2", ["auto", 2], ["AUTO", 1, None]),
    (lambda: either(integer(0), number(0.0, 1.0)), "an integer >= 0 or a number in [0, 1]", [3, 0.5], [-1, 1.5]),
    (lambda: index_list(), "a non-empty list of device indices", [[0], [0, 3]], [[], [-1], [0.5], [True], (0,)]),
    (lambda: optional(integer(1)), "null or an integer >= 1", [None, 1], [0]),
    (lambda: triple(number(0.0, 1.0)), "a list of 3 (one per RGB channel), each a number in [0, 1]",
     [[0, 0.5, 1], (0.1, 0.2, 0.3)], [[0.1, 0.2], [0.1] * 4, [0.1, 2, 0.3], {0.1, 0.2, 0.3}]),
])
def test_bad_values_by_kind_of_check(build: Callable[[], validation.Check], allowed: str, good: list, bad: list) -> None:
    """Each kind of rule at its bounds, and the words the one-line error uses for what it allows."""
    check = build()
    assert check.allowed == allowed
    assert [v for v in good if not check.ok(v)] == []
    assert [v for v in bad if check.ok(v)] == []


def test_bad_values_are_found_after_interpolation_and_absent_keys_are_skipped() -> None:
    cfg = OmegaConf.create({"data": {"std": [0.25, 0.25, 0.25], "mean": [0.5, 0.5, "${data.std.0}"]}})
    assert validation.check_values(cfg) == []
    cfg.data.std[0] = 0
    assert validation.check_values(cfg) == [
        "data.std=[0, 0.25, 0.25]: must be a list of 3 (one per RGB channel), each a number > 0"]


def test_bad_values_of_the_distillation_teacher(compose, tmp_path: Path) -> None:
    """Exported models only (a model.pt2, or a run directory with one), each checked; none without module/distill."""
    run = tmp_path / "run"
    (run / "model.pt2").parent.mkdir()
    (run / "model.pt2").touch()
    exported, ckpt, empty_run = tmp_path / "teacher.pt2", tmp_path / "last.ckpt", tmp_path / "empty_run"
    exported.touch()
    ckpt.touch()
    empty_run.mkdir()
    assert validation.check_teacher(compose()) == []
    assert validation.check_teacher(compose(["module/distill=kd"])) == [
        "module.distill.teacher is not set: pass module.distill.teacher=<model.pt2 or run directory>"]
    assert validation.check_teacher(compose(["module/distill=kd", "module.distill.teacher=[]"])) == [
        "module.distill.teacher=[]: name at least one model.pt2 or run directory"]
    for good in (run, exported):
        assert validation.check_teacher(compose(["module/distill=kd", f"module.distill.teacher='{good}'"])) == []
    assert validation.check_teacher(compose(["module/distill=kd", f"module.distill.teacher='{ckpt}'"])) == [
        f"module.distill.teacher={ckpt}: no such exported model: {ckpt}; pass a model.pt2 or a run directory that "
        "has one"]
    teachers = [run, exported, ckpt, tmp_path / "gone.pt2", empty_run]
    cfg = compose(["module/distill=kd", "module.distill.teacher=[" + ",".join(f"'{t}'" for t in teachers) + "]"])
    assert validation.check_teacher(cfg) == [
        f"module.distill.teacher={cfg.module.distill.teacher}: no such exported model: {t}; pass a model.pt2 or a "
        "run directory that has one" for t in teachers[2:]]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_gpu_requested_without_cuda(compose) -> None:
    with pytest.raises(ConfigError, match=r"trainer.accelerator=gpu: no CUDA GPU is visible.*use trainer=cpu"):
        validation.validate_config(compose(["trainer=gpu", "trainer.accelerator=gpu"]))


def test_gpu_requested_or_more_devices_than_the_machine_has(compose, monkeypatch) -> None:
    """On a machine with the GPUs and CPU cores set here: each refusal names the count and the fix."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    gpu_fix = "use trainer=cpu or trainer.accelerator=auto"
    assert validation.check_machine(compose(["trainer.accelerator=cuda"])) == [
        f"trainer.accelerator=cuda: no CUDA GPU is visible on this machine; {gpu_fix}"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for devices in ("2", "[1]", "-1", "auto"):
        assert validation.check_machine(compose(["trainer.accelerator=gpu", f"trainer.devices={devices}"])) == []
    assert validation.check_machine(compose(["trainer.accelerator=cuda", "trainer.devices=3"])) == [
        f"trainer.devices=3: this machine has 2 CUDA GPU(s); {gpu_fix}"]
    assert validation.check_machine(compose(["trainer.accelerator=gpu", "trainer.devices=[0,2]"])) == [
        f"trainer.devices=[0, 2]: this machine has 2 CUDA GPU(s); {gpu_fix}"]
    for devices in ("4", "[0,3]", "auto"):
        assert validation.check_machine(compose([f"trainer.devices={devices}"])) == []
    assert validation.check_machine(compose(["trainer.devices=5"])) == [
        "trainer.devices=5: this machine has 4 CPU core(s); lower trainer.devices"]
    assert validation.check_machine(compose(["trainer.accelerator=auto", "trainer.devices=4096"])) == []  # Lightning's
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: one core is all that can be counted on
    assert validation.check_machine(compose(["trainer.devices=2"])) == [
        "trainer.devices=2: this machine has 1 CPU core(s); lower trainer.devices"]


@pytest.mark.parametrize("group", ["model", "aug", "module/optimizer", "callbacks"])
def test_shipped_options_pass(compose, group: str) -> None:
    for option in options(group):
        validation.validate_config(compose([f"{group}={option}"]))


def test_data_sizes_and_classes_are_checked_against_the_dataset(compose) -> None:
    data = SyntheticSource(num_train=40, num_test=8, num_classes=10).load()
    validation.validate_data(compose(["data.val_size=8", "data.batch_size=32"]), data)
    with pytest.raises(ConfigError, match=r"data.batch_size=33: must be <= 32, the training images left after"):
        validation.validate_data(compose(["data.val_size=8", "data.batch_size=33"]), data)
    with pytest.raises(ConfigError, match=r"data.val_size=40: must be < 40"):
        validation.validate_data(compose(["data.val_size=40"]), data)
    with pytest.raises(ConfigError, match=r"model.num_classes=5: the dataset has 10 classes"):
        validation.validate_data(compose(["model.num_classes=5"]), data)


def test_parameter_budget(compose) -> None:
    from hydra.utils import instantiate

    cfg = compose(["max_params=1000"])
    net = instantiate(cfg.model)
    with pytest.raises(ConfigError) as error:
        validation.validate_model(cfg, net)
    assert str(error.value) == (f"max_params=1000: the network has {count_parameters(net)} trainable parameters; "
                                "shrink the model (e.g. model.stages[*].channels) or raise max_params")
    validation.validate_model(compose([f"max_params={count_parameters(net)}"]), net)


# --------------------------------------------------------------------------- 7. output directory


def test_output_dir_must_be_a_writable_directory_with_free_space(tmp_path: Path, monkeypatch) -> None:
    validation.check_output_dir(tmp_path / "new" / "run")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"output directory .*/file/run: .*/file is a file, not a directory; pass"):
        validation.check_output_dir(blocker / "run")
    free = {"MB": 100}
    monkeypatch.setattr(validation.shutil, "disk_usage", lambda path: SimpleNamespace(free=free["MB"] * 2**20))
    validation.check_output_dir(tmp_path / "run")  # exactly the margin is enough
    free["MB"] = 5
    with pytest.raises(ConfigError) as error:
        validation.check_output_dir(tmp_path / "run")
    assert str(error.value) == (f"output directory {tmp_path / 'run'}: only 5 MB free, a run needs 100 MB; "
                                f"free some space or {OUTPUT_DIR_FIX}")


def test_output_dir_must_be_writable(tmp_path: Path, monkeypatch) -> None:
    """The probe file is written in the nearest existing directory. (Root may write anywhere, so the refusal is
    the operating system's, simulated for that directory.)"""
    refused = tmp_path / "read-only"
    refused.mkdir()
    real = validation.tempfile.TemporaryFile

    def temporary_file(dir: Path):
        if Path(dir) == refused:
            raise PermissionError(13, "Permission denied")
        return real(dir=dir)
    monkeypatch.setattr(validation.tempfile, "TemporaryFile", temporary_file)
    validation.check_output_dir(tmp_path / "run")
    with pytest.raises(ConfigError) as error:
        validation.check_output_dir(refused / "new" / "run")
    assert str(error.value) == (f"output directory {refused / 'new' / 'run'}: cannot write in {refused} "
                                f"(Permission denied); {OUTPUT_DIR_FIX}")


@pytest.mark.parametrize("bad", ["run", "sweep"])
def test_output_dir_check_runs_before_hydra_makes_the_run_or_sweep_directory(bad: str, tmp_path: Path, capsys) -> None:
    """Hydra's callback: the run directory before a run, the sweep directory before a sweep; a bad one ends the
    process with the one-line error and exit status 2 (Hydra would turn an exception into a warning)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    dirs = {"run": str(tmp_path / "run"), "sweep": str(tmp_path / "sweep")} | {bad: str(blocker / bad)}
    config = OmegaConf.create({"hydra": {"run": {"dir": dirs["run"]}, "sweep": {"dir": dirs["sweep"]}}})
    callback = validation.OutputDirCheck()
    good_start, bad_start = ((callback.on_multirun_start, callback.on_run_start) if bad == "run"
                             else (callback.on_run_start, callback.on_multirun_start))
    good_start(config)
    with pytest.raises(SystemExit) as exit:
        bad_start(config)
    assert exit.value.code == 2
    assert capsys.readouterr().err == (f"error: output directory {blocker / bad}: {blocker} is a file, not a "
                                       f"directory; {OUTPUT_DIR_FIX}\n")


# --------------------------------------------------------------------------- 1, 2, 7 on the command line


def test_user_errors_print_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    runs = {  # started together: each pays the imports
        "value": popen(["train.py", *TINY, "data.batch_size=0", f"hydra.run.dir={tmp_path / 'value'}"]),
        "data": popen(["train.py", "data.root=" + str(tmp_path / "nothing"), "data.download=false",
                       f"hydra.run.dir={tmp_path / 'data'}"]),
        "output": popen(["train.py", *TINY, f"hydra.run.dir={blocker / 'run'}"]),
        "typo": popen(["train.py", *TINY, "trainer.max_epoch=3"]),
    }
    results = {name: finish(p) for name, p in runs.items()}
    expected = {
        "value": "error: data.batch_size=0: must be an integer >= 1",
        "data": f"error: {tmp_path / 'nothing' / 'cifar-10-batches-py'}: CIFAR-10 not found",
        "output": f"error: output directory {blocker / 'run'}: {blocker} is a file",
    }
    for name, line in expected.items():
        rc, out, err = results[name]
        assert rc == 2, (name, out, err)
        assert err.strip().splitlines()[-1].startswith(line), (name, err)
        assert "Traceback" not in out + err, (name, out, err)
        assert (out + err).count(line.removeprefix("error: ")) == 1, ("printed more than once", name, out, err)
    # A failed start leaves no run directory behind (the error is on the console, not in a file to find).
    assert not (tmp_path / "value").exists() and not (tmp_path / "data").exists()
    # A missing dataset: the line says where it looked and which layouts it reads, with their data= options.
    missing = results["data"][2].strip().splitlines()[-1]
    assert "pickle layout" in missing and "folder layout" in missing and "data=folder" in missing, missing
    rc, out, err = results["typo"]  # unknown keys are Hydra's: its own short message
    assert rc == 1 and "Key 'max_epoch' is not in struct" in err and "Traceback" not in err, err


# --------------------------------------------------------------------------- 3. no code from checkpoints


class Payload:
    """Unpickling this would create a file: what a hostile checkpoint could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_are_loaded_without_running_code(tmp_path: Path, compose, monkeypatch) -> None:
    from hydra.utils import instantiate

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # even where the environment asks torch to unpickle
    marker = tmp_path / "pwned"
    evil = tmp_path / "run" / "checkpoints" / "last.ckpt"
    evil.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "loops": {}, "payload": Payload(marker)}, evil)
    assert pickle.loads(pickle.dumps(Payload(marker))) is None and marker.exists()  # the payload works...
    marker.unlink()
    with pytest.raises(ResumeError, match=r"resume=.*: cannot load .*last.ckpt \(UnpicklingError"):
        checkpoint_path(evil.parent.parent)
    cfg = compose()
    module = instantiate(cfg.module, net=instantiate(cfg.model), batch_aug=instantiate(cfg.aug))
    with pytest.raises(pickle.UnpicklingError):
        load_weights(module, evil)
    assert not marker.exists()  # ...but neither load ran it


def test_resume_refuses_missing_truncated_and_foreign_checkpoints(tmp_path: Path) -> None:
    """Each refusal is one line naming what to do instead."""
    def refusal(resume: Path) -> str:
        with pytest.raises(ResumeError) as error:
            checkpoint_path(resume)
        return str(error.value)

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert refusal(tmp_path) == (f"resume={tmp_path}: no checkpoint at {ckpt}; the run stopped before its first "
                                 "epoch ended; start it afresh without resume=")
    missing = tmp_path / "epoch=3.ckpt"
    assert refusal(missing) == f"resume={missing}: no checkpoint at {missing}; pass a run directory or a .ckpt file"
    weights = tmp_path / "weights.ckpt"
    torch.save({"w": torch.zeros(2)}, weights)  # a state dict, not a training run's checkpoint
    assert refusal(weights) == (f"resume={weights}: {weights} holds no training-loop state, so it is not a Lightning "
                                "checkpoint this project wrote; pass <run_dir>/checkpoints/last.ckpt")
    ckpt.parent.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "loops": {}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:2000])
    with pytest.raises(Exception) as cause:
        torch.load(ckpt, weights_only=True)
    assert refusal(tmp_path) == (f"resume={tmp_path}: cannot load {ckpt} ({type(cause.value).__name__}: "
                                 f"{first_line(cause.value)}); resume from another checkpoint in {ckpt.parent} or "
                                 "start afresh")


# --------------------------------------------------------------------------- 4. resume


def run_with(path: Path, overrides: str) -> Path:
    """A run directory as train.py leaves it after an epoch: its Hydra overrides and its last checkpoint."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(overrides)
    (path / "checkpoints").mkdir()
    torch.save({"state_dict": {}, "loops": {}}, path / "checkpoints" / "last.ckpt")
    return path


def test_resume_argv_reuses_the_runs_overrides_and_directory(tmp_path: Path) -> None:
    """The directory is named as Hydra's override_dirname names sweep jobs, so the user quotes it for Hydra."""
    run_dir = run_with(tmp_path / "model=strided,aug=cutout", "- data=synthetic\n- trainer.max_epochs=3\n- resume=old\n")
    argv = resume_argv(["-cn", "train", "--config-dir=conf", f"resume='{run_dir}'", "trainer.max_epochs=5"])
    assert argv == ["-cn", "train", "--config-dir=conf", "data=synthetic", "trainer.max_epochs=5",
                    f"resume='{run_dir}'", f"hydra.run.dir='{run_dir}'"]
    for unchanged in (["trainer.max_epochs=5"], ["resume=", "trainer.max_epochs=5"], ["resume=null"]):
        assert resume_argv(unchanged) == unchanged
    for multirun in ("-m", "--multirun"):
        with pytest.raises(ResumeError) as error:
            resume_argv([multirun, f"resume='{run_dir}'"])
        assert str(error.value) == f"resume={run_dir}: resume continues one run; drop -m/--multirun"


@pytest.mark.parametrize(("value", "read_as"), [("a,b", "Hydra reads this as a ChoiceSweep"),
                                               ("1e5", "Hydra reads this as a float"),
                                               ("runs/lr=0.1", "Hydra cannot read this value")])
def test_resume_argv_asks_to_quote_a_value_hydra_does_not_read_as_one_path(value: str, read_as: str) -> None:
    with pytest.raises(ResumeError) as error:
        resume_argv([f"resume={value}"])
    assert str(error.value).startswith(f"resume={value}: {read_as}")
    assert str(error.value).endswith("; quote the path for Hydra: \"resume='<run_dir>'\"")


def test_resume_argv_replaces_the_runs_overrides_key_by_key(tmp_path: Path) -> None:
    """A key with a package is its own key; the old resume= goes, wherever it was; a directory given is kept."""
    run_dir = run_with(tmp_path / "run", "- resume=old\n- model@teacher=strided\n- data=synthetic\n")
    assert resume_argv([f"resume={run_dir}", "model=dilated", "hydra.run.dir=copy"]) == [
        "model@teacher=strided", "data=synthetic", f"resume={run_dir}", "model=dilated", "hydra.run.dir=copy"]


def test_resume_argv_quotes_the_run_directory_for_hydra(tmp_path: Path) -> None:
    """Reached through a link, the run's real directory has characters that mean something in an override."""
    real = run_with(tmp_path / "lr=0.1" / "it's, done\\", "- data=synthetic\n")
    link = tmp_path / "latest"
    link.symlink_to(real)
    argv = resume_argv([f"resume={link}"])
    assert argv[:-1] == ["data=synthetic", f"resume={link}"]
    [override] = OverridesParser.create().parse_overrides(argv[-1:])
    assert (override.key_or_group, override.value()) == ("hydra.run.dir", str(real.resolve()))


def test_resume_argv_leaves_a_checkpoint_from_outside_a_run_to_a_new_run(tmp_path: Path, monkeypatch) -> None:
    """A .ckpt that is not <run>/checkpoints/*.ckpt of a run with its overrides: the command line as given (a new
    run directory, the config as composed). One saved on a GPU this machine lacks is read onto the CPU."""
    with monkeypatch.context() as saving_on_a_gpu:
        saving_on_a_gpu.setattr(torch.serialization, "location_tag", lambda storage: "cuda:63")
        torch.save({"state_dict": {"w": torch.ones(2)}, "loops": {}}, tmp_path / "gpu.ckpt")
    loose = run_with(tmp_path / "loose", "").joinpath("checkpoints", "last.ckpt")
    (tmp_path / "loose" / ".hydra" / "overrides.yaml").unlink()  # checkpoints/ without a run's overrides
    exported = run_with(tmp_path / "run", "- data=synthetic\n") / "exported" / "last.ckpt"  # not in checkpoints/
    exported.parent.mkdir()
    exported.write_bytes(loose.read_bytes())
    for ckpt in (tmp_path / "gpu.ckpt", loose, exported):
        argv = [f"resume={ckpt}", "trainer.max_epochs=5"]
        assert resume_argv(argv) == argv


def draw_from_every_generator(transform) -> list[float]:
    """One number from each generator a resumed run must continue: torch, numpy, random and the transform's."""
    return [torch.rand(1).item(), np.random.rand(), random.random(), transform.random_generator.random(),
            transform.py_random.random()]


def test_random_state_restores_every_generator_from_a_weights_only_checkpoint() -> None:
    """What the checkpoint holds, read back with weights_only=True, puts every stream back where it was."""
    import albumentations as A

    transform = A.Compose([A.HorizontalFlip()])
    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_transform=transform))
    saving = RandomState(seed=7)
    saving.setup(trainer, None, "fit")  # seeds the transform's generators from `seed`: repeatable runs
    assert transform.random_generator.random() == np.random.default_rng(7).random()
    assert transform.py_random.random() == random.Random(7).random()
    buffer = io.BytesIO()
    torch.save(saving.state_dict(), buffer)
    expected = draw_from_every_generator(transform)

    resumed = RandomState(seed=0)  # a fresh process: other seeds, then the checkpoint is loaded
    resumed.setup(trainer, None, "fit")
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert draw_from_every_generator(transform) == expected


def last_epoch(ckpt: Path) -> int | None:
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"]
    except Exception:  # not there yet, or being replaced
        return None


def logged_scalars(run_dir: Path, pid: int | None = None) -> dict[tuple[str, int], float]:
    """Every scalar in the run's TensorBoard events by (tag, step), by process ``pid`` only if given;
    less the throughput, which is timed and so differs between any two runs."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    files = [f for f in (run_dir / "tensorboard").glob("events.out.tfevents.*")  # *.<time>.<host>.<pid>.<n>
             if pid is None or f.name.split(".")[-2] == str(pid)]
    return {(v.tag, e.step): make_ndarray(v.tensor).item() for f in files for e in EventFileLoader(str(f)).Load()
            for v in e.summary.value
            if v.metadata.plugin_data.plugin_name == "scalars" and v.tag != "train/images_per_sec"}


def event_steps(run_dir: Path, tag: str, pid: int | None = None) -> list[int]:
    """The steps at which ``tag`` was logged in the run's TensorBoard events (by process ``pid`` only if given)."""
    return sorted(step for logged, step in logged_scalars(run_dir, pid) if logged == tag)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The state dict of the run's last checkpoint: what every epoch, not only the best one, led to."""
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    differ = [k for k in expected if not torch.equal(got[k], expected[k])]
    assert not differ, f"weights differ from the uninterrupted run's: {differ[:5]}"


def event_values(run_dir: Path, tag: str) -> dict[int, float]:
    """The epoch-logged values of ``tag`` in the run's TensorBoard events, by epoch (the last one logged wins)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    values: dict[int, float] = {}
    for f in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        for e in EventFileLoader(str(f)).Load():
            values |= {e.step: v.tensor.float_val[0] for v in e.summary.value if v.tag == tag}
    return {epoch: values[step] for epoch, step in enumerate(sorted(values))}


def test_killed_run_resumes_to_the_same_metrics(tmp_path: Path, baseline: dict) -> None:
    run_dir = tmp_path / "run"
    killed = popen(["train.py", *RESUMABLE, f"hydra.run.dir={run_dir}"])
    deadline = time.monotonic() + 600
    while last_epoch(run_dir / "checkpoints" / "last.ckpt") is None:
        assert killed.poll() is None and time.monotonic() < deadline, finish(killed)
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    finish(killed)
    assert killed.returncode == -signal.SIGKILL and not (run_dir / "metrics.json").exists()
    epoch = last_epoch(run_dir / "checkpoints" / "last.ckpt")
    assert epoch < EPOCHS - 1, "killed after the last epoch: nothing left to resume"

    resuming = popen(["train.py", f"resume={run_dir}"])
    rc, out, err = finish(resuming)
    assert rc == 0, err
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["status"] == "ok" and resumed["run_dir"] == str(run_dir)
    assert {k: resumed[k] for k in COMPARED} == {k: baseline[k] for k in COMPARED}
    # TensorBoard: the resumed process logs the epochs after the checkpoint, at the uninterrupted run's steps.
    baseline_steps = event_steps(Path(baseline["run_dir"]), "val/acc")
    assert len(baseline_steps) == EPOCHS
    assert event_steps(run_dir, "val/acc", resuming.pid) == baseline_steps[epoch + 1:]
    # The best checkpoint may be one from before the kill: the epochs after it must match too, bit for bit.
    assert_same_weights(final_weights(run_dir), final_weights(Path(baseline["run_dir"])))
    resumed_values = logged_scalars(run_dir, resuming.pid)
    baseline_values = logged_scalars(Path(baseline["run_dir"]))
    assert {key for key in baseline_values if key[1] > baseline_steps[epoch]} <= resumed_values.keys()
    assert resumed_values == {key: value for key, value in baseline_values.items() if key in resumed_values}


def stop_at_epoch(patch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make a run fail as it starts ``epoch``, after the previous epoch's last.ckpt: a killed run, in process."""
    def start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == epoch:
            raise RuntimeError("stopped")
    patch.setattr(TrainSpeed, "on_train_epoch_start", start)


@pytest.mark.parametrize("kind", ["finished", "killed"])
def test_resume_with_more_epochs_continues_on_a_new_schedule(kind: str, tmp_path: Path) -> None:
    """resume=<run> trainer.max_epochs=N after a finished 1-epoch run or a 3-epoch run killed after its first
    epoch: the restored one-cycle schedule knew the old length (OneCycleLR raised "Tried to step 5 times");
    the rest of the run gets its own schedule, starting at its warm-up learning rate."""
    first = [*TINY, "trainer.max_epochs=1" if kind == "finished" else "trainer.max_epochs=3",
             "module.optimizer.lr=0.1", "module.scheduler.div_factor=4"]
    with pytest.MonkeyPatch.context() as patch:
        if kind == "killed":
            stop_at_epoch(patch, 1)
        try:
            train_in_process(first, tmp_path)
        except RuntimeError:
            assert kind == "killed"
    assert last_epoch(tmp_path / "checkpoints" / "last.ckpt") == 0
    resumed = train_in_process([*first, f"resume={tmp_path}", "trainer.max_epochs=4"], tmp_path)
    assert resumed["status"] == "ok" and resumed["epochs"] == 4, resumed
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    schedule = state["lr_schedulers"][0]
    assert (schedule["total_steps"], schedule["last_epoch"]) == (6, 6)  # epochs 2-4 of 2 batches
    # the new segment began at its warm-up rate (max_lr / div_factor), not where the old one stood
    assert event_values(tmp_path, "train/lr/pg1")[1] == pytest.approx(0.1 / 4)  # lr / div_factor


def test_a_failed_resume_keeps_the_finished_runs_metrics(tmp_path: Path) -> None:
    finished = train_in_process(TINY, tmp_path)
    assert finished["status"] == "ok"
    with pytest.MonkeyPatch.context() as patch, pytest.raises(RuntimeError, match="stopped"):
        stop_at_epoch(patch, 1)
        train_in_process([*TINY, f"resume={tmp_path}", "trainer.max_epochs=4"], tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == finished
    [attempt] = [json.loads(line) for line in (tmp_path / training.FAILED_ATTEMPTS).read_text().splitlines()]
    assert attempt["status"] == "failed" and attempt["error"] == "RuntimeError: stopped"


# --------------------------------------------------------------------------- 5. divergence


def test_diverging_run_stops_at_once_and_is_marked_failed(tmp_path: Path) -> None:
    with pytest.raises(DivergenceError, match=r"non-finite loss \(.*\) at step \d+ \(epoch \d+, learning rate") as error:
        train_in_process([*TINY, "trainer.max_epochs=20", "module.optimizer.lr=1e6"], tmp_path)
    step, epoch = map(int, re.search(r"at step (\d+) \(epoch (\d+)", str(error.value)).groups())
    assert step < 10, "took too long to notice"
    saved = last_epoch(tmp_path / "checkpoints" / "last.ckpt")
    assert saved is None or saved < epoch, "kept training after the NaN"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert metrics["error"].startswith("DivergenceError: non-finite loss") and "lower module.optimizer.lr" in metrics["error"]


def test_the_loss_is_read_every_n_steps_and_on_the_epochs_last_batch() -> None:
    """The check waits for the GPU, so it skips the steps in between; NaN weights stay NaN until the next one."""
    module = ClassifierModule(nn.Linear(2, 2), optimizer=torch.optim.SGD, finite_check_every_n_steps=4)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    module._trainer = SimpleNamespace(is_last_batch=False, optimizers=[optimizer], global_step=5, current_epoch=2)
    nan = torch.tensor(float("nan"))
    module.check_finite(nan, batch_idx=5)  # not a check step: no host sync, no error
    with pytest.raises(DivergenceError) as error:
        module.check_finite(nan, batch_idx=8)
    assert str(error.value) == ("non-finite loss (nan) at step 5 (epoch 2, learning rate 0.1): lower "
                                "module.optimizer.lr or set trainer.gradient_clip_val")
    module._trainer.is_last_batch = True
    with pytest.raises(DivergenceError):
        module.check_finite(nan, batch_idx=5)
    module.check_finite(torch.tensor(1.0), batch_idx=8)


def test_a_one_cycle_schedule_too_short_to_build_is_a_config_error(tmp_path: Path) -> None:
    # 2 epochs x 2 batches x pct_start 0.25 = one warm-up step: OneCycleLR divides by zero
    with pytest.raises(ConfigError, match=r"module.scheduler cannot schedule a run of 4 optimizer steps .*pct_start"):
        train_in_process([*TINY, "trainer.max_epochs=2", "module.scheduler.pct_start=0.25"], tmp_path)


# --------------------------------------------------------------------------- 6. sweeps


def test_a_failing_sweep_job_does_not_stop_the_others(tmp_path: Path) -> None:
    rc, out, err = finish(popen(["train.py", "-m", *TINY, "module.optimizer.lr=-1,0.05", "aug=none",
                                 f"hydra.sweep.dir={tmp_path}"]))
    assert rc == 1, err
    rows = {r["job_num"]: r for r in (json.loads(p.read_text()) for p in tmp_path.glob("*/metrics.json"))}
    assert rows[0]["status"] == "failed" and rows[0]["error"].startswith("ConfigError: module.optimizer.lr=-1")
    assert rows[1]["status"] == "ok"
    summary = (tmp_path / "summary.md").read_text()
    assert "| failed | ConfigError: module.optimizer.lr=-1: must be a number > 0 |" in summary
    assert "error: 1 of 2 runs failed" in err


# --------------------------------------------------------------------------- 8. determinism


def test_same_seed_and_config_give_the_same_metrics(tmp_path: Path, baseline: dict) -> None:
    """The same metrics, every epoch's logged values and the same final weights, not only the best epoch's."""
    again = train_in_process(RESUMABLE, tmp_path)
    assert {k: again[k] for k in COMPARED} == {k: baseline[k] for k in COMPARED}
    assert logged_scalars(tmp_path) == logged_scalars(Path(baseline["run_dir"]))
    assert_same_weights(final_weights(tmp_path), final_weights(Path(baseline["run_dir"])))


@pytest.mark.parametrize("threads", [3, None])
def test_cpu_threads_sets_torchs_threads_and_null_keeps_torchs_choice(threads, compose_task, tmp_path: Path) -> None:
    """``cpu_threads=N`` is the number of threads torch computes with; null leaves torch's own choice."""
    cfg = compose_task([*TINY, f"cpu_threads={'null' if threads is None else threads}"], output_dir=tmp_path)
    before = torch.get_num_threads()
    try:
        training.start(cfg)
        assert torch.get_num_threads() == (before if threads is None else threads)
    finally:
        torch.set_num_threads(before)
