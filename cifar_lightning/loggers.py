"""Loggers beside Lightning's own, where its defaults do not fit (see conf/logger/)."""
from __future__ import annotations

import os
from typing import Any

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only


def mlflow_logger(**kwargs: Any) -> MLFlowLogger:
    """Lightning's MLFlowLogger on MLflow's local file store: no database server to set up.

    MLflow 3 keeps that store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE``
    is set; a value already in the environment is kept.
    """
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(**kwargs)


class TensorBoard(TensorBoardLogger):
    """Lightning's TensorBoard logger, laid out for TensorBoard's dashboards.

    * Lightning's ``epoch``, logged with every metric, is written as :data:`EPOCH`: the Scalars page
      (sorted by tag) no longer opens on an epoch counter.
    * With final metrics, HParams gets only the session summaries, not an experiment summary in
      every run: from the sessions TensorBoard works out which hyperparameters differ between the
      runs and shows those first (the swept ``model``, ``aug``, ...); from a run's experiment summary
      it showed the first five by name, which hid ``model``.
    """

    EPOCH = "trainer/epoch"

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics({self.EPOCH if k == "epoch" else k: v for k, v in metrics.items()}, step)

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: dict[str, Any] | None = None, step: int | None = None) -> None:
        super().log_hyperparams(params)  # kept for hparams.yaml; writes no summary without metrics
        if not metrics:
            return
        from torch.utils.tensorboard.summary import hparams

        self.log_metrics(metrics, step)
        _, session_start, session_end = hparams(self._sanitize_params(_flatten_dict(_convert_params(params))), metrics)
        writer = self.experiment._get_file_writer()
        writer.add_summary(session_start, step)
        writer.add_summary(session_end, step)
