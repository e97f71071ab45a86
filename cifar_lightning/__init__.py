"""cifar-lightning: a Lightning + Hydra study of ~56k-parameter CNNs on CIFAR-10."""
from omegaconf import OmegaConf

# Albumentations fills in pixel units (uint8), the config states the mean in [0, 1].
OmegaConf.register_new_resolver("pixels", lambda values: OmegaConf.create([round(255 * v) for v in values]), replace=True)
