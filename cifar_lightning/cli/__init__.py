"""The command-line tools, run as ``python -m cifar_lightning.cli.<tool>``: argument parsing over
:mod:`cifar_lightning.runs`, :mod:`cifar_lightning.plots` and :mod:`cifar_lightning.sweeps`.
Nothing on the training path imports them (tests/test_imports.py)."""
