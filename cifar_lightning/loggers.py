"""Loggers beside Lightning's own, where its defaults do not fit (see conf/logger/)."""
from __future__ import annotations

import csv
import os
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only


def mlflow_logger(**kwargs: Any) -> MLFlowLogger:
    """Lightning's MLFlowLogger on MLflow's local file store: no database server to set up.

    MLflow 3 keeps that store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE``
    is set; a value already in the environment is kept.
    """
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(**kwargs)


class _ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer that starts from the header of a ``metrics.csv`` already on disk.

    Under ``trainer=ddp`` (spawn), fit and test each run in a new process with a pickled copy of the
    writer the main process created (``train()``'s ``log_hyperparams``). The copy knows no columns:
    Lightning's writer would rewrite the file under the test's keys only and fail on fit's rows
    (``dict contains fields not in fieldnames``).
    """

    def _record_new_keys(self) -> set[str]:
        if not self.metrics_keys and self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])
        return super()._record_new_keys()


class CSV(CSVLogger):
    """Lightning's CSVLogger whose writer keeps the columns of the file it continues (see above)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


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
