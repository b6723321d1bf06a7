"""The config loader: overrides, paths relative to the config, and one-line errors that name the key path.

Errors come from loading (``load_config``: types, keys, registered names) or from checking what the code makes of
the config (``check_config``: blocks, optimizers, data files); a user sees both the same way.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import EXAMPLES

from torchport.config import Config, DataConfig, ExportConfig, config_from_dict, load_config
from torchport.errors import ConfigError
from torchport.overrides import apply_override
from torchport.registry import DATA_SOURCES, VARIANTS
from torchport.validate import check_config

LAYERS: list[Any] = [
    {"conv2d": {"out_channels": 16, "kernel_size": 3, "padding": 1}},
    "relu",
    "dropout",
    "flatten",
    {"linear": {"out_features": "classes"}},
]


def write(folder: Path, body: Any, name: str = "cfg.yaml") -> Path:
    path = folder / name
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write(tmp_path, {"model": {"layers": LAYERS}, "train": {"epochs": 5}})


# --- overrides -----------------------------------------------------------------------------------------------


def test_overrides_set_values_with_yaml_types(config_path: Path) -> None:
    config = load_config(
        config_path,
        [
            "train.epochs=2",
            "model.layers[0].conv2d.out_channels=8",
            "model.layers[0].conv2d.kernel_size=[3, 3]",
            "train.optimizer.lr=0.01",
            "verify.batch_sizes=[1, 2]",
            "data.split.val=0.25",
            "seed=7",
        ],
    )
    assert config.train.epochs == 2
    assert config.model.layers[0] == {"conv2d": {"out_channels": 8, "kernel_size": [3, 3], "padding": 1}}
    assert config.train.optimizer.kwargs()["lr"] == 0.01
    assert config.verify.batch_sizes == [1, 2]
    assert config.data.split.val == 0.25
    assert config.seed == 7


def test_override_a_whole_list_entry_by_index(config_path: Path) -> None:
    config = load_config(config_path, ["model.layers[1]=gelu", "model.layers[2]={dropout: {p: 0.1}}"])
    assert config.model.layers[1] == "gelu"
    assert config.model.layers[2] == {"dropout": {"p": 0.1}}


def test_override_gives_arguments_to_a_bare_block_name(config_path: Path) -> None:
    config = load_config(config_path, ["model.layers[2].dropout.p=0.3"])
    assert config.model.layers[2] == {"dropout": {"p": 0.3}}


def test_override_fixes_an_invalid_config(tmp_path: Path) -> None:
    path = write(tmp_path, {"model": {"layers": LAYERS}, "train": {"epochs": 0}})
    with pytest.raises(ConfigError, match=r"^train\.epochs: "):
        load_config(path)
    assert load_config(path, ["train.epochs=3"]).train.epochs == 3


def test_overrides_do_not_change_the_file(config_path: Path) -> None:
    before = config_path.read_text()
    load_config(config_path, ["train.epochs=2"])
    assert config_path.read_text() == before


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs", r"^override 'train\.epochs': expected key\.path=value$"),
        ("train..epochs=3", r"^override 'train\.\.epochs': malformed key path$"),
        ("train.epochs[x]=3", r"^override 'train\.epochs\[x\]': malformed key path$"),
        ("model.layers[9].linear.out_features=3", r"^override 'model\.layers\[9\]\.linear\.out_features': index \[9\]"),
        ("model.layers[9]=relu", r"^override 'model\.layers\[9\]': index \[9\] is out of range$"),
        (
            "model.layers[3].conv2d.stride=2",
            r"^override 'model\.layers\[3\]\.conv2d\.stride': entry \[3\] is 'flatten'",
        ),
        ("train.epochs.max=3", r"^override 'train\.epochs\.max': 'max' is not inside a mapping$"),
        ("train.epochs=abc", r"^train\.epochs: input should be a valid integer.*\(got 'abc'\)$"),
        ("train.epochs=", r"^train\.epochs: input should be a valid integer \(got None\)$"),
        ("trian.epochs=2", r"^trian: unknown key; did you mean 'train'\?"),
        ("model.layers[0].conv2d.kernel_size=big", r"^model\.layers\[0\]\.conv2d\.kernel_size: expected int or"),
    ],
)
def test_bad_overrides(config_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_config(load_config(config_path, [override]))


def test_apply_override_builds_missing_sections() -> None:
    raw: dict[str, Any] = {}
    apply_override(raw, "train.scheduler.name=StepLR")
    assert raw == {"train": {"scheduler": {"name": "StepLR"}}}


# --- errors: one line naming the key path --------------------------------------------------------------------


def _with(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"model": {"layers": copy.deepcopy(LAYERS)}}
    for dotted, value in changes.items():
        apply_override(raw, f"{dotted.replace('__', '.')}={yaml.safe_dump(value, default_flow_style=True).strip()}")
    return raw


BAD_CONFIGS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown top-level key", {"modle": {"layers": LAYERS}}, r"^modle: unknown key; did you mean 'model'\?"),
    ("model missing", {"train": {"epochs": 1}}, r"^model: required key is missing$"),
    ("unknown nested key", _with(train__epohcs=3), r"^train\.epohcs: unknown key; did you mean 'epochs'\?"),
    ("wrong type", _with(train__epochs="many"), r"^train\.epochs: input should be a valid integer.*'many'"),
    ("negative", _with(train__epochs=-1), r"^train\.epochs: input should be greater than or equal to 1 \(got -1\)$"),
    ("fraction", _with(data__split__val=1.5), r"^data\.split\.val: input should be less than 1 \(got 1\.5\)$"),
    (
        "unknown source",
        _with(data__source="digts"),
        r"^data\.source: unknown data source 'digts'; did you mean 'digits'\?",
    ),
    ("unknown source lists the names", _with(data__source="mnist"), r"^data\.source: .*\(expected one of: digits, "),
    ("unknown variant", _with(export__variants=["int8", "int4"]), r"^export\.variants\[1\]: unknown variant 'int4'"),
    (
        "variant twice",
        _with(export__variants=["int8", "int8"]),
        r"^export\.variants: .*variant\(s\) listed twice: int8",
    ),
    ("union", _with(export__aoti="maybe"), r"^export\.aoti: expected bool or 'auto' \(got 'maybe'\)$"),
    ("pattern", _with(name="a b"), r"^name: string should match pattern"),
    ("empty layers", {"model": {"layers": []}}, r"^model\.layers: list should have at least 1 item"),
    ("batch sizes", _with(verify__batch_sizes=[1, 0]), r"^verify\.batch_sizes: .*every batch size must be at least 1"),
    ("bench threads", _with(bench__threads=[1, 0]), r"^bench\.threads: .*thread counts must be at least 1"),
    ("bench threads word", _with(bench__threads=["many"]), r"^bench\.threads\[0\]"),
    ("bench budget", _with(bench__budget_seconds=-1), r"^bench\.budget_seconds: input should be greater than or equal"),
    (
        "unknown block",
        _with(**{"model__layers[1]": "rleu"}),
        r"^model\.layers\[1\]: unknown block 'rleu'; did you mean 'relu'",
    ),
    (
        "block argument name",
        _with(**{"model__layers[0].conv2d.kernal_size": 3}),
        r"^model\.layers\[0\]\.conv2d\.kernal_size: unknown argument; did you mean 'kernel_size'\?",
    ),
    (
        "block argument type",
        _with(**{"model__layers[0].conv2d.out_channels": "lots"}),
        r"^model\.layers\[0\]\.conv2d\.out_channels: input should be a valid integer.*'lots'",
    ),
    ("csv without path", _with(data__source="csv"), r"^data\.path: required for source 'csv'$"),
    (
        "csv file missing",
        _with(data__source="csv", data__path="nope.csv"),
        r"^data\.path: file not found: .*nope\.csv$",
    ),
    ("image folder missing", _with(data__source="image_folder", data__path="imgs"), r"^data\.path: folder not found"),
    ("npy targets", _with(data__source="npy", data__path="cfg.yaml"), r"^data\.targets: required for source 'npy'"),
    ("unknown optimizer", _with(train__optimizer__name="Adamm"), r"^train\.optimizer\.name: unknown optimizer 'Adamm'"),
    (
        "optimizer argument",
        _with(train__optimizer={"name": "SGD", "lr": 0.1, "momentun": 0.9}),
        r"^train\.optimizer\.momentun: not an argument of SGD; did you mean 'momentum'\?",
    ),
    (
        "optimizer value names its key",
        _with(train__optimizer={"name": "SGD", "lr": "fast"}),
        r"^train\.optimizer\.lr: .*\(got 'fast'\)$",
    ),
    (
        "unknown scheduler",
        _with(train__scheduler__name="Cosine"),
        r"^train\.scheduler\.name: unknown scheduler 'Cosine'",
    ),
]


@pytest.mark.parametrize(("raw", "message"), [pytest.param(r, m, id=i) for i, r, m in BAD_CONFIGS])
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, raw: dict[str, Any], message: str) -> None:
    write(tmp_path, "placeholder", name="cfg.yaml")  # a file that exists, for the npy case
    with pytest.raises(ConfigError, match=message) as raised:
        check_config(config_from_dict(raw, base_dir=tmp_path))
    assert "\n" not in str(raised.value)


def test_loading_checks_types_and_names_and_check_config_the_code_behind_them(tmp_path: Path) -> None:
    """A bad block loads (loading imports no torch) and is refused by check_config, naming its key path."""
    config = config_from_dict(_with(**{"model__layers[1]": "rleu"}), base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^model\.layers\[1\]: unknown block 'rleu'"):
        check_config(config)
    good = config_from_dict(_with(), base_dir=tmp_path)
    assert check_config(good) is good


def test_registered_names_are_checked_wherever_a_section_is_made() -> None:
    with pytest.raises(ConfigError, match=r"^data\.source: unknown data source 'irsi'; did you mean 'iris'\?"):
        DataConfig(source="irsi")
    with pytest.raises(ConfigError, match=r"^export\.variants\[0\]: unknown variant 'fp8'"):
        ExportConfig(variants=["fp8"])
    assert ExportConfig(variants=[]).variants == []


def test_the_json_schema_lists_the_registered_names() -> None:
    """The registries are the one list of valid names; the published schema reads them, as validation does."""
    definitions = Config.model_json_schema()["$defs"]
    assert definitions["DataConfig"]["properties"]["source"]["enum"] == DATA_SOURCES.names()
    assert definitions["ExportConfig"]["properties"]["variants"]["items"]["enum"] == VARIANTS.names()
    assert set(DATA_SOURCES.names()) >= {"digits", "csv", "image_folder"}
    assert VARIANTS.names() == ["optimized", "int8", "fp16", "ort"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: [a\n", r"cfg\.yaml: invalid YAML at line 2, column 1: "),
        ("model:\n  layers: [relu]\n train: {}\n", r"cfg\.yaml: invalid YAML at line \d+, column \d+: "),
        (
            "- relu\n- flatten\n",
            r"cfg\.yaml: expected a mapping of sections \(data, model, train, \.\.\.\) at the top level$",
        ),
        ("just text\n", r"cfg\.yaml: expected a mapping of sections"),
        ("", r"^model: required key is missing$"),
    ],
)
def test_unreadable_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(write(tmp_path, text))
    assert "\n" not in str(raised.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config file not found: .*absent\.yaml$"):
        load_config(tmp_path / "absent.yaml")


# --- resolution ----------------------------------------------------------------------------------------------


def test_paths_are_relative_to_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "table.csv").write_text("x,y\n1,0\n")
    path = write(
        tmp_path, {"data": {"source": "csv", "path": "data/table.csv", "target": "y"}, "model": {"layers": LAYERS}}
    )
    monkeypatch.chdir("/")
    config = load_config(path)
    assert config.data.path == (tmp_path / "data" / "table.csv").resolve()
    assert config.import_paths[0] == tmp_path.resolve()
    assert config.name == "cfg"


def test_resolved_config_round_trips_with_the_same_hash(config_path: Path, tmp_path: Path) -> None:
    config = load_config(config_path, ["train.epochs=2"])
    again = load_config(write(tmp_path, config.to_yaml(), name="resolved.yaml"))
    assert again.model_dump() == config.model_dump()
    assert again.hash() == config.hash()
    assert load_config(config_path, ["train.epochs=3"]).hash() != config.hash()


def test_defaults_make_a_minimal_config_valid(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {"model": {"layers": ["flatten", {"linear": {"out_features": "classes"}}]}}))
    assert isinstance(config, Config)
    assert config.data.source == "digits" and config.train.epochs >= 1


# --- run names and the config hash (issue 14, findings 2 and 8) ------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "/tmp/elsewhere", "a/b", "../up"])
def test_a_run_name_that_leaves_the_runs_folder_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"^name: ") as raised:
        load_config(write(tmp_path, {"name": name, "model": {"layers": LAYERS}}))
    assert "\n" not in str(raised.value)


def test_hash_does_not_depend_on_where_the_config_lies(tmp_path: Path) -> None:
    """The same file in two folders, and the resolved copy a run writes elsewhere: one hash for all three."""
    body = {"name": "same", "model": {"layers": LAYERS}, "train": {"epochs": 2}}
    for folder in ("a", "b/deeper", "run"):
        (tmp_path / folder).mkdir(parents=True)
    here = load_config(write(tmp_path / "a", body))
    there = load_config(write(tmp_path / "b" / "deeper", body))
    assert here.hash() == there.hash()
    written = load_config(write(tmp_path / "run", here.to_yaml(), name="config.yaml"))
    assert written.hash() == here.hash()


def test_hash_follows_the_data_file_not_its_folder(tmp_path: Path) -> None:
    """A CSV copied with its config hashes the same; another CSV of the same name does not."""
    source = EXAMPLES / "data" / "houses.csv"
    data = {"source": "csv", "path": "houses.csv", "target": "price_k", "task": "regression"}
    body = {"name": "csv", "data": data, "model": {"layers": LAYERS}}
    hashes = []
    for folder, rows in (("v1", None), ("v1-copy", None), ("v2", 10)):
        (tmp_path / folder).mkdir()
        lines = source.read_text().splitlines(keepends=True)
        (tmp_path / folder / "houses.csv").write_text("".join(lines if rows is None else lines[: rows + 1]))
        hashes.append(load_config(write(tmp_path / folder, body)).hash())
    assert hashes[0] == hashes[1] != hashes[2]


def test_a_logger_whose_library_is_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Named before any data is read, with the extra to install, not an internal error after the model is built."""
    from torchport import validate

    monkeypatch.setitem(validate.LOGGER_PACKAGES, "mlflow", "torchport_no_such_package")
    with pytest.raises(ConfigError, match=r"^train\.loggers\[1\]: 'mlflow' needs .*torchport\[loggers\]"):
        validate.check_loggers(["tensorboard", "mlflow"])
    validate.check_loggers(["tensorboard"])
