"""Hyperparameter search (conf/hparams_search/, the ``search`` extra): every search config composes
into trials that build, and a real search on synthetic data reports each trial's own validation
accuracy to Optuna, marks a failed trial failed and goes on, and leaves the best parameters."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cifar_lightning.sweeps import best_overrides
from conftest import TINY, compose_hydra, options, run_python

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
optuna = pytest.importorskip("optuna")
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides  # noqa: E402

RECIPE_LEVERS = {"module.optimizer.lr", "module.weight_decay", "module.label_smoothing", "data.batch_size",
                 "callbacks.ema.decay"}


@pytest.mark.parametrize("search", options("hparams_search"))
def test_search_config_composes_into_trials_that_build(search: str) -> None:
    cfg = compose_hydra([f"hparams_search={search}"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "best_val_acc"  # validation, never test
    sampler = instantiate(sweeper.sampler)
    assert isinstance(sampler, optuna.samplers.TPESampler) and sweeper.sampler.seed is not None
    assert sweeper.n_trials >= 12
    assert cfg.trainer.max_epochs <= 5 and 0 < cfg.trainer.limit_train_batches < 1  # short trials

    distributions, fixed = create_params_from_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    assert not fixed and set(distributions) == set(sweeper.params)  # every entry is a search dimension
    assert RECIPE_LEVERS <= set(distributions)

    # One sampled trial must compose (each searched key exists for this aug) and build.
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask(distributions)
    trial_cfg = compose_hydra([f"hparams_search={search}", *(f"{k}={v}" for k, v in trial.params.items())])
    for key, value in trial.params.items():
        assert OmegaConf.select(trial_cfg, key) == value
    instantiate(trial_cfg.aug)
    instantiate(trial_cfg.callbacks.ema)
    instantiate(trial_cfg.module.optimizer)


def test_search_reports_each_trials_validation_accuracy_and_survives_a_failed_trial(tmp_path: Path) -> None:
    sweep, storage = tmp_path / "sweep", f"sqlite:///{tmp_path}/search.db"
    # The study exists before the sweep (as when a search resumes); its first trial gets a RICAP beta
    # that fails in training, the other two a valid one.
    study = optuna.create_study(storage=storage, study_name="ricap_optuna", direction="maximize")
    for beta in (-1.0, 0.5, 0.5):
        study.enqueue_trial({"aug.beta": beta})

    result = run_python(["train.py", "-m", "hparams_search=ricap_optuna", *TINY, "aug.beta=choice(-1.0,0.5)",
                "callbacks.ema.update_starting_at_step=0", "hydra.sweeper.n_trials=3",
                f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={sweep}"])

    assert result.returncode == 1, result.stderr[-3000:]  # the search finishes, then reports its failed trial
    trials = optuna.load_study(study_name="ricap_optuna", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    runs = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(runs) == 3
    for trial in trials:
        params = {f"{k}={v}" for k, v in trial.params.items()}
        (run,) = [r for r in runs if params <= set(r["overrides"])]  # the trial's own run directory
        if trial.state.name == "FAIL":
            assert run["status"] == "failed" and run["error"]
        else:
            assert run["status"] == "ok"
            assert trial.value == pytest.approx(run["best_val_acc"])

    results = OmegaConf.load(sweep / "optimization_results.yaml")
    best = max((t for t in trials if t.value is not None), key=lambda t: t.value)
    assert OmegaConf.to_container(results.best_params) == best.params
    assert results.best_value == pytest.approx(best.value)

    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["failed", "ok", "ok"]
    for row, trial in zip(rows, trials):  # job order is trial order
        assert set(row["swept"].split()) >= {f"{k}={v}" for k, v in trial.params.items()}

    retrain = best_overrides(sweep)
    assert f"python train.py {' '.join(retrain)}" in result.stdout  # printed when the search ends
    # The trials' recipe travels along (the search config's choices, command-line recipe settings),
    # the search config and the short budget do not.
    assert {"aug=ricap", "callbacks=ema", "callbacks.ema.update_starting_at_step=0"} <= set(retrain)
    assert {f"{k}={v}" for k, v in best.params.items()} <= set(retrain)
    assert not [o for o in retrain if o.lstrip("+").startswith(("hparams_search", "trainer", "data"))]
