"""The one place that says what a torchport config may contain.

A config is YAML validated by the pydantic models below. Every error a user can make is reported as one line
that names the key path (``model.layers[3].conv2d.kernel_size``) and what was expected; the CLI turns it into
exit code 2. Paths inside a config are relative to the config file's folder, and that folder is importable so
a user's ``my_blocks.py`` beside the config can be named by import path.

This is the ground floor of the pipeline: it imports nothing of models, data or training, so loading a config
(``torchport --help``, a typo in a key, the launcher before torchrun) never imports torch. Names of data sources
and export variants are checked against the registries, which list them without importing them; the checks that
need the code behind the names (blocks and their arguments, optimizers, data files) are ``torchport.validate``'s.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from torchport.errors import ConfigError, format_validation_error
from torchport.overrides import apply_override
from torchport.registry import DATA_SOURCES, VARIANTS, Registry, import_user_module


def _listing(registry: Registry[Any], where: str) -> Any:
    """A JSON Schema hook that lists a registry's names as the allowed values (at ``where``: "" for the value
    itself, "items" for a list's entries), read when the schema is made, so a name registered later is in it."""

    def add_enum(schema: dict[str, Any]) -> None:
        (schema[where] if where else schema)["enum"] = registry.names()

    return add_enum


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(StrictModel):
    """Fractions of the whole dataset; the rest is training data. Deterministic from the seed."""

    val: float = Field(0.2, ge=0.0, lt=1.0)
    test: float = Field(0.0, ge=0.0, lt=1.0)
    stratify: bool = True


class DataConfig(StrictModel):
    source: str = Field("digits", json_schema_extra=_listing(DATA_SOURCES, ""))
    path: Path | None = None
    targets: Path | None = None
    target: str | None = None
    features: list[str] | None = None
    categorical: list[str] = Field(default_factory=list)
    x_key: str = "x"
    y_key: str = "y"
    image_size: tuple[int, int] | None = None
    color_mode: Literal["rgb", "grayscale"] = "rgb"
    task: Literal["auto", "classification", "regression"] = "auto"
    split: SplitConfig = Field(default_factory=SplitConfig)
    normalize: bool = True
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    num_workers: int = Field(0, ge=0)
    # image folders: skip images that cannot be decoded (counted and logged) instead of stopping with exit 2
    skip_corrupt: bool = False
    # training-only augmentation, torchvision.transforms.v2 by name: [{random_crop: {size: 32, padding: 4}}, ...]
    augment: list[Any] = Field(default_factory=list)
    # auto: samples that would take over 512 MiB in memory are read per batch (image files, .npy rows, tables)
    in_memory: Literal["auto"] | bool = "auto"
    # CSV and Parquet are read this many rows at a time, never whole; null: as many rows as hold 8 MiB of values
    chunk_rows: int | None = Field(None, ge=1)
    stats_samples: int = Field(10000, ge=1)  # samples read per batch: normalisation statistics from this many
    cache_dir: Path | None = None  # large tables' encoded features; default $XDG_CACHE_HOME/torchport or ~/.cache

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        # A ConfigError (not a ValueError) passes through pydantic unchanged: the registry's line names the key.
        return DATA_SOURCES.check(source, where="data.source")


class ModelConfig(StrictModel):
    """``layers`` entries are a block name or ``{name: {args}}``; they are checked against the registry."""

    layers: list[Any] = Field(min_length=1)


class OptimizerConfig(BaseModel):
    """``name`` is a torch.optim class; every other key is passed to it as a keyword argument."""

    model_config = ConfigDict(extra="allow")
    name: str = "AdamW"

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SchedulerConfig(BaseModel):
    """``name`` is a torch.optim.lr_scheduler class; other keys are its keyword arguments."""

    model_config = ConfigDict(extra="allow")
    name: str
    interval: Literal["epoch", "step"] = "epoch"

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EarlyStoppingConfig(StrictModel):  # stop after `patience` epochs without `metric` improving by > min_delta
    metric: str | None = None  # a key of the epoch record (val_loss, val_accuracy, train_loss); default val_<metric>
    patience: int = Field(5, ge=1)
    mode: Literal["auto", "min", "max"] = "auto"  # auto: max for accuracy, min for losses and errors
    min_delta: float = Field(0.0, ge=0.0)


class TrainConfig(StrictModel):
    epochs: int = Field(10, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(name="AdamW", lr=1e-3))
    scheduler: SchedulerConfig | None = None
    loss: Literal["auto", "cross_entropy", "mse", "l1", "smooth_l1"] = "auto"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(None, gt=0.0)
    checkpoint_every_steps: int | None = Field(None, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16: autocast (train/precision.py)
    accumulate_steps: int = Field(1, ge=1)  # batches whose gradients add up to one optimizer step
    early_stopping: EarlyStoppingConfig | None = None
    loggers: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list)  # train/loggers.py
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = True
    threads: int | None = Field(None, ge=1)
    # Distribution (train/distributed.py). auto: DDP under torchrun, otherwise one process.
    strategy: Literal["auto", "ddp", "dp", "single"] = "auto"
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl on CUDA, gloo on CPU
    sync_batchnorm: bool = False  # DDP on CUDA only; batch statistics over the global batch
    # How long a rank waits for the others (to form the group, in any one collective) before one line, not a hang.
    dist_timeout_s: float = Field(300.0, gt=0)


class OutputNames(StrictModel):
    logits: str = "logits"
    probabilities: str = "probabilities"
    prediction: str = "prediction"


class ExportConfig(StrictModel):
    opset: int = Field(18, ge=17, le=23)
    aoti: bool | Literal["auto"] = "auto"
    checkpoint: Literal["best", "last"] = "best"
    input_name: str = "input"
    output_names: OutputNames = Field(default_factory=OutputNames)
    golden_samples: int = Field(8, ge=1, le=1024)
    # Optimised variants (`torchport optimize`, and `run` after verify); each is kept only if it passes its gate.
    variants: list[str] = Field(
        default_factory=lambda: ["optimized", "int8", "fp16", "ort"], json_schema_extra=_listing(VARIANTS, "items")
    )
    # Classification: the largest absolute drop in validation accuracy; regression: the largest relative rise in
    # validation RMSE (0.01 = 1 %). Measured against the fp32 model.onnx in ONNX Runtime.
    max_accuracy_drop: float = Field(0.01, allow_inf_nan=False)
    # auto: static QDQ when the graph has convolutions, dynamic for linear/recurrent-only graphs.
    int8_mode: Literal["auto", "static", "dynamic"] = "auto"
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(256, ge=1, le=100_000)
    per_channel: bool = False
    # Static INT8 activations. uint8 (U8S8): on x86 CPUs without VNNI ONNX Runtime fuses only U8S8 QDQ into
    # QLinearConv; int8 (S8S8, onnxruntime's default) leaves most convolutions in float there. ARM prefers int8.
    int8_activations: Literal["uint8", "int8"] = "uint8"
    # Timed runs per (batch, threads) measurement; 0 skips latency measurement.
    latency_iterations: int = Field(30, ge=0, le=100_000)
    # true: a refused or failed variant fails the stage (exit 1); false: it is reported and left out.
    strict_variants: bool = False

    @field_validator("variants")
    @classmethod
    def _known_unique_variants(cls, variants: list[str]) -> list[str]:
        for index, name in enumerate(variants):
            VARIANTS.check(name, where=f"export.variants[{index}]")
        repeated = sorted({v for v in variants if variants.count(v) > 1})
        if repeated:
            raise ValueError(f"variant(s) listed twice: {', '.join(repeated)}")
        return variants


def _positive_sizes(sizes: list[int]) -> list[int]:
    if any(size < 1 for size in sizes):
        raise ValueError("every batch size must be at least 1")
    return sizes


BatchSizes = Annotated[list[int], AfterValidator(_positive_sizes)]


class VerifyConfig(StrictModel):
    atol: float = Field(1e-4, ge=0.0)
    rtol: float = Field(1e-3, ge=0.0)
    batch_sizes: BatchSizes = Field(default_factory=lambda: [1, 7, 64], min_length=1)


def _all_threads() -> list[int | Literal["all"]]:
    return [1, "all"]


class BenchConfig(StrictModel):
    """What `torchport run` measures at its end (`torchport bench` takes the same as options)."""

    budget_seconds: float = Field(20.0, ge=0.0, description="timed calls in all, shared out; 0 skips the benchmark")
    batch_sizes: BatchSizes = Field(default_factory=lambda: [1, 8, 64], min_length=1)
    threads: list[int | Literal["all"]] = Field(default_factory=_all_threads, min_length=1)
    compile: bool = Field(True, description="include torch.compile: about 10 s of compiling per batch size")

    @field_validator("threads")
    @classmethod
    def _threads(cls, threads: list[int | str]) -> list[int | str]:
        if any(isinstance(count, int) and count < 1 for count in threads):
            raise ValueError("thread counts must be at least 1 (or 'all')")
        return threads


class Config(StrictModel):
    name: str = Field("model", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    import_paths: list[Path] = Field(default_factory=list)
    plugins: list[str] = Field(default_factory=list)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)

    @field_validator("name")
    @classmethod
    def _stays_in_runs(cls, name: str) -> str:
        if set(name) == {"."}:
            raise ValueError(f"'{name}' would put the run outside runs/; use letters, digits, '_', '-' or '.'")
        return name

    def hash(self) -> str:
        """A short, stable fingerprint of everything that shapes the trained weights and exports (not the bench,
        nor how long ranks wait for each other: a run may resume with another timeout)."""
        # Nor where it logs to; keys added since leave the hash of a config that keeps their defaults (old runs resume).
        added_since = {"precision": "fp32", "accumulate_steps": 1, "early_stopping": None}
        added = {key for key, default in added_since.items() if getattr(self.train, key) == default}
        data_defaults = {"skip_corrupt": False, "augment": [], "in_memory": "auto", "stats_samples": 10000}
        data_added = {key for key, default in data_defaults.items() if getattr(self.data, key) == default}
        data_added |= {"chunk_rows", "cache_dir"}  # how data is read, not what it is
        excluded: dict[str, Any] = {"bench": True, "train": {"dist_timeout_s", "loggers", *added}, "data": data_added}
        dumped = self.model_dump(mode="json", exclude=excluded)
        # Where the files lie is not what they are: the config's folder (and other import paths) move with a
        # checkout, and a run's resolved config.yaml lies in the run dir. A data file enters by name and size (a
        # cheap stand-in for its content: data/v1/train.csv and data/v2/train.csv differ), a folder by name.
        del dumped["import_paths"]
        for key in ("path", "targets"):
            if dumped["data"].get(key):
                where = Path(dumped["data"][key])
                dumped["data"][key] = f"{where.name}:{where.stat().st_size}" if where.is_file() else where.name
        canonical = json.dumps(dumped, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)

    @classmethod
    def from_dict(
        cls,
        raw: Mapping[str, Any],
        base_dir: str | os.PathLike[str] | None = None,
        overrides: Sequence[str] | None = None,
    ) -> Config:
        """A config from a mapping (a notebook's dict), exactly as if it were a YAML file in ``base_dir`` (default:
        the working directory): overrides applied, relative paths resolved, plugins imported; ``raw`` is left as
        it was."""
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"config: expected a mapping of sections (data, model, train, ...), got {type(raw).__name__}"
            )
        folder = Path(base_dir) if base_dir is not None else Path.cwd()
        return config_from_dict(copy.deepcopy(dict(raw)), folder.resolve(), list(overrides or []))


def default_run_dir(config: Config) -> Path:
    """Where a run writes unless told: runs/<name>, relative to the working directory."""
    return Path("runs") / config.name


# --------------------------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override, validate and resolve a config file; raise ConfigError with a one-line message.

    What needs torch to check (blocks, optimizers) is left to ``torchport.validate.check_config``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data, model, train, ...) at the top level")
    raw.setdefault("name", path.stem)
    return config_from_dict(raw, base_dir=path.resolve().parent, overrides=overrides)


def config_from_dict(raw: dict[str, Any], base_dir: Path, overrides: list[str] | None = None) -> Config:
    """Validate a config mapping whose relative paths are relative to ``base_dir``."""
    for override in overrides or []:
        apply_override(raw, override)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, Config)) from None
    config = resolve_paths(config, base_dir)
    import_plugins(config)
    return config


def resolve_paths(config: Config, base_dir: Path) -> Config:
    """Make every path absolute so that a resolved config written into a run directory stands on its own."""
    data = config.data

    def absolute(value: Path | None) -> Path | None:
        return None if value is None else (base_dir / value).resolve()

    paths = {key: absolute(getattr(data, key)) for key in ("path", "targets", "cache_dir")}
    resolved_data = data.model_copy(update=paths)
    import_paths = [base_dir.resolve()] + [Path(absolute(p) or p) for p in config.import_paths]
    unique_paths = list(dict.fromkeys(import_paths))
    return config.model_copy(update={"data": resolved_data, "import_paths": unique_paths})


def import_plugins(config: Config) -> None:
    """Import the ``plugins`` modules, whose ``@register_block`` names the layers use: part of loading, so that a
    stage that reads a run's config.yaml back (export, serve) knows the same names as training did."""
    for index, module in enumerate(config.plugins):
        import_user_module(module, config.import_paths, where=f"plugins[{index}]")
