"""Experiment loggers (``train.loggers``): TensorBoard event files and an MLflow run, written by rank 0 only.

Both are optional extras, imported only when named. What they get: the config (TensorBoard as text, MLflow as
flattened params), every epoch's record as metrics at step = epoch index, the test metrics at the end, and — at
the end of ``torchport run`` — the bundle as an MLflow artifact (:func:`log_bundle`).

Where: TensorBoard writes under ``RUN_DIR/tensorboard``. MLflow 3 refuses a plain ``file:`` tracking store unless
MLFLOW_ALLOW_FILE_STORE is set process-wide, so the run goes to a SQLite store in the run dir
(``sqlite:///RUN_DIR/mlflow.db``), its artifacts to ``RUN_DIR/mlruns`` (a ``file:`` artifact location);
``RUN_DIR/mlflow.json`` names the tracking URI and run id, so a resumed run (and the bundle) log to the same run.
A resumed run's repeated epochs: TensorBoard purges the events from the resumed epoch on; MLflow keeps each
logged value (a metric's history then shows the repeated step twice).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Protocol

from torchport.config import Config

NOT_METRICS = ("epoch", "step", "seconds")


class Logger(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """``{"train": {"optimizer": {"lr": 0.1}}}`` -> ``{"train.optimizer.lr": "0.1"}``; lists as JSON text."""
    if isinstance(tree, dict):
        flat: dict[str, str] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: json.dumps(tree) if isinstance(tree, list) else str(tree)}


class TensorBoardLogger:
    def __init__(self, config: Config, run_dir: Path, first_epoch: int, resumed: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events of the epochs a resumed run repeats are dropped, so each epoch is shown once.
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=first_epoch if resumed else None)
        if not resumed:
            self.writer.add_text("config", "```yaml\n" + config.to_yaml() + "```")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MlflowLogger:
    def __init__(self, config: Config, run_dir: Path, first_epoch: int, resumed: bool) -> None:
        self.client, self.run_id = mlflow_run(config, run_dir, fresh=not resumed)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


LOGGERS: dict[str, type[TensorBoardLogger] | type[MlflowLogger]] = {
    "tensorboard": TensorBoardLogger,
    "mlflow": MlflowLogger,
}


def mlflow_run(config: Config, run_dir: Path, fresh: bool) -> tuple[Any, str]:
    """The run's MLflow client and run id: the one ``mlflow.json`` names, or (fresh, or none yet) a new run with
    the config as params."""
    from mlflow import MlflowClient
    from mlflow.entities import Param

    record = run_dir / "mlflow.json"
    if not fresh and record.is_file():
        known = json.loads(record.read_text())
        return MlflowClient(tracking_uri=known["tracking_uri"]), known["run_id"]
    tracking_uri = f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("torchport")
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment("torchport", artifact_location=(run_dir / "mlruns").resolve().as_uri())
    )
    run_id = client.create_run(experiment_id, run_name=config.name).info.run_id
    params = [Param(key, value[:6000]) for key, value in flatten(config.model_dump(mode="json")).items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
        client.log_batch(run_id, params=params[start : start + 100])
    record.write_text(json.dumps({"tracking_uri": tracking_uri, "run_id": run_id}) + "\n")
    return client, run_id


class Loggers(contextlib.AbstractContextManager["Loggers"]):
    """The loggers ``train.loggers`` names (none when ``enabled`` is false: ranks other than 0)."""

    def __init__(self, config: Config, run_dir: Path, first_epoch: int, resumed: bool, enabled: bool) -> None:
        names = config.train.loggers if enabled else []
        self.loggers: list[Logger] = [LOGGERS[name](config, run_dir, first_epoch, resumed) for name in names]

    def epoch(self, record: dict[str, Any]) -> None:
        metrics = {k: float(v) for k, v in record.items() if k not in NOT_METRICS and v is not None}
        for logger in self.loggers:
            logger.log_metrics(metrics, record["epoch"])

    def final(self, metrics: dict[str, float], epochs_run: int) -> None:
        """The test metrics, at the step after the last epoch."""
        for logger in self.loggers:
            if metrics:
                logger.log_metrics(metrics, epochs_run)

    def __exit__(self, *exc: object) -> None:
        for logger in self.loggers:
            logger.close()


def log_bundle(run_dir: Path) -> bool:
    """Attach RUN_DIR/bundle to the run's MLflow run as the artifact ``bundle``; False when there is no MLflow run
    or no bundle."""
    record, bundle = run_dir / "mlflow.json", run_dir / "bundle"
    if not record.is_file() or not (bundle / "manifest.json").is_file():
        return False
    from mlflow import MlflowClient

    known = json.loads(record.read_text())
    MlflowClient(tracking_uri=known["tracking_uri"]).log_artifacts(known["run_id"], str(bundle), "bundle")
    return True
