"""Loggers beside Lightning's own, where its defaults do not fit (see conf/logger/)."""
from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger


def mlflow_logger(**kwargs: Any) -> MLFlowLogger:
    """Lightning's MLFlowLogger on MLflow's local file store: no database server to set up.

    MLflow 3 keeps that store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE``
    is set; a value already in the environment is kept.
    """
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(**kwargs)
