"""Train, test and export one model, or a sweep of them with ``-m``; see README.md and conf/."""
import sys

import hydra
from omegaconf import DictConfig

import cifar_lightning  # noqa: F401 - registers the config resolvers
from cifar_lightning.errors import exit_on_user_error
from cifar_lightning.resume import resume_argv
from cifar_lightning.training import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error():  # `error: <what and how to fix>`, exit status 2, instead of a traceback
        return run(cfg)


if __name__ == "__main__":
    with exit_on_user_error():
        sys.argv[1:] = resume_argv(sys.argv[1:])  # resume=<run_dir>: that run's config and directory
    main()
