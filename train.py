"""Train, test and export one model, or a sweep of them with ``-m``; see README.md and conf/."""
import hydra
from omegaconf import DictConfig

import cifar_lightning  # noqa: F401 - registers the config resolvers
from cifar_lightning.training import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return run(cfg)


if __name__ == "__main__":
    main()
