"""The overrides that re-train a search's best trial at the full budget.

    python train.py $(python -m cifar_lightning.best_params <sweep_dir>)

Re-training drops the search config (conf/hparams_search/), and with it the short trial budget
and the options it picked (such as ``callbacks=ema``). So the overrides repeat the trials' recipe:
their choices of the recipe's config groups and their command-line settings under those groups,
with the best parameters of ``optimization_results.yaml`` in place of the searched ones. Data,
trainer and budget settings stay the re-run's own.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

RECIPE_GROUPS = ("model", "aug", "module/optimizer", "callbacks")


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def _in_recipe(override: str) -> bool:
    return _key(override).replace("/", ".").split(".")[0] in {g.split("/")[0] for g in RECIPE_GROUPS}


def best_overrides(sweep_dir: str | Path) -> list[str]:
    """The trials' recipe choices and settings, then the best trial's parameters."""
    sweep = Path(sweep_dir)
    results = sweep / "optimization_results.yaml"
    if not results.is_file():
        raise FileNotFoundError(f"{results} not found: the search has not finished (or is no Optuna search)")
    best = OmegaConf.to_container(OmegaConf.load(results).best_params)
    trial = next(sweep.glob("*/.hydra"))  # every trial shares the recipe; only the searched values differ
    choices = OmegaConf.load(trial / "hydra.yaml").hydra.runtime.choices
    recipe = {group: f"{group}={choices[group]}" for group in RECIPE_GROUPS if group in choices}
    recipe.update((_key(o), o) for o in OmegaConf.load(trial / "overrides.yaml") if _in_recipe(o))
    recipe.update((key, f"{key}={value}") for key, value in best.items())
    return list(recipe.values())


def main() -> None:
    parser = argparse.ArgumentParser(description="Print the overrides that re-train a search's best trial.")
    parser.add_argument("sweep_dir")
    args = parser.parse_args()
    print(" ".join(best_overrides(args.sweep_dir)))


if __name__ == "__main__":
    main()
