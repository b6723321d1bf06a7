"""User blocks by import path (the config's folder is importable) and by decorator; unknown names."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from torchport.cli import main
from torchport.config import Config, load_config
from torchport.errors import ConfigError
from torchport.models import ModelSpec, build_model, check_layers
from torchport.registry import (
    BLOCKS,
    CLIENTS,
    DATA_SOURCES,
    RUNTIMES,
    VARIANTS,
    Registry,
    import_object,
    register_block,
)
from torchport.validate import check_config

BLOCK_SOURCE = '''
import torch
from torch import nn


class ChannelScale(nn.Module):
    """Scale each channel by a learned factor; in_channels comes from the data."""

    def __init__(self, in_channels: int, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, in_channels, 1, 1), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def half_pool(kernel_size: int = 2) -> nn.Module:
    return nn.MaxPool2d(kernel_size)


NOT_A_BLOCK = 3
'''


def layers_around(block: Any) -> list[Any]:
    """A conv before the block (so its in_channels is inferred as 4) and a classifier after it."""
    return [
        {"conv2d": {"out_channels": 4, "kernel_size": 3, "padding": 1}},
        block,
        "flatten",
        {"linear": {"out_features": "classes"}},
    ]


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imports of user modules put folders on sys.path; give each test its own copy to leave behind."""
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def restore_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks a test registers disappear with the test (the block tests enumerate the registry)."""
    monkeypatch.setattr(BLOCKS, "_items", dict(BLOCKS._items))


@pytest.fixture
def user_module(tmp_path: Path) -> Iterator[str]:
    """A blocks module beside the config, under a fresh name (a module is imported once per process)."""
    name = f"my_blocks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(BLOCK_SOURCE)
    yield name
    sys.modules.pop(name, None)


def model_spec(layers: list[Any], in_shape: tuple[int, ...], import_paths: list[Path] | None = None) -> ModelSpec:
    """Three classes and identity normalisation: enough of the data to build a model."""
    return ModelSpec(
        layers=layers,
        input_shape=in_shape,
        input_dtype="float32",
        num_outputs=3,
        input_mean=np.zeros(in_shape, dtype=np.float32),
        input_std=np.ones(in_shape, dtype=np.float32),
        import_paths=import_paths or [],
    )


def load_checked(path: Path) -> Config:
    """The config as a verb sees it: loaded (plugins imported), then checked against the blocks it names."""
    return check_config(load_config(path))


def write_config(folder: Path, layers: list[Any], **sections: Any) -> Path:
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump({"model": {"layers": layers}, **sections}))
    return path


# --- import paths --------------------------------------------------------------------------------------------


def test_user_block_beside_the_config_by_import_path(tmp_path: Path, user_module: str) -> None:
    config = load_checked(write_config(tmp_path, layers_around({f"{user_module}:ChannelScale": {"init": 0.5}})))
    assert tmp_path.resolve() in config.import_paths

    model = build_model(model_spec(config.model.layers, (1, 8, 8), import_paths=config.import_paths))
    scale = model.layers[1]
    assert type(scale).__name__ == "ChannelScale"
    assert scale.scale.shape == (1, 4, 1, 1)  # in_channels inferred from the conv before it
    torch.testing.assert_close(scale.scale, torch.full((1, 4, 1, 1), 0.5))
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    assert scale.scale.grad is not None


def test_user_factory_function_by_import_path(tmp_path: Path, user_module: str) -> None:
    config = load_checked(write_config(tmp_path, layers_around(f"{user_module}:half_pool")))
    model = build_model(model_spec(config.model.layers, (1, 8, 8), import_paths=config.import_paths))
    assert model.layers[3].in_features == 4 * 4 * 4


def test_the_name_my_blocks_beside_the_config_just_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's spelling: `my_blocks:ClassName` with my_blocks.py next to the config."""
    # A module is imported once per process: examples/my_blocks.py may be loaded already (it is put back after),
    # and this one must not stay behind for the examples' tests.
    monkeypatch.delitem(sys.modules, "my_blocks", raising=False)
    (tmp_path / "my_blocks.py").write_text(BLOCK_SOURCE)
    try:
        config = load_checked(write_config(tmp_path, layers_around("my_blocks:ChannelScale")))
        build_model(model_spec(config.model.layers, (1, 8, 8), import_paths=config.import_paths))
        assert Path(sys.modules["my_blocks"].__file__ or "").parent == tmp_path
    finally:
        sys.modules.pop("my_blocks", None)


def test_import_paths_key_adds_folders_relative_to_the_config(tmp_path: Path, user_module: str) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    (tmp_path / f"{user_module}.py").rename(library / f"{user_module}.py")
    layers = layers_around(f"{user_module}:ChannelScale")
    with pytest.raises(ConfigError, match=rf"^model\.layers\[1\]: cannot import module '{user_module}'"):
        load_checked(write_config(tmp_path, layers))
    config = load_checked(write_config(tmp_path, layers, import_paths=["lib"]))
    assert library.resolve() in config.import_paths


def test_user_block_arguments_are_validated_with_its_annotations(tmp_path: Path, user_module: str) -> None:
    block = f"{user_module}:ChannelScale"
    with pytest.raises(ConfigError, match=rf"^model\.layers\[1\]\.{block}\.init: input should be a valid number"):
        load_checked(write_config(tmp_path, layers_around({block: {"init": "big"}})))
    with pytest.raises(ConfigError, match=rf"^model\.layers\[1\]\.{block}\.in_channels: is inferred"):
        load_checked(write_config(tmp_path, layers_around({block: {"in_channels": 4}})))
    with pytest.raises(
        ConfigError, match=rf"^model\.layers\[1\]\.{block}\.inti: unknown argument; did you mean 'init'"
    ):
        load_checked(write_config(tmp_path, layers_around({block: {"inti": 4}})))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_module_xyz:Pool", r"^model\.layers\[1\]: cannot import module 'no_such_module_xyz'"),
        ("no_such_pkg_xyz.sub:Pool", r"^model\.layers\[1\]: cannot import module 'no_such_pkg_xyz\.sub'"),
        ("{module}:Missing", r"^model\.layers\[1\]: module '{module}' has no attribute 'Missing'"),
        (":Pool", r"^model\.layers\[1\]: ':Pool' is not an import path; expected package\.module:ClassName"),
        ("{module}:", r"^model\.layers\[1\]: '{module}:' is not an import path"),
        (".relative:Pool", r"^model\.layers\[1\]: '\.relative:Pool' is not an import path"),
    ],
)
def test_bad_import_paths(tmp_path: Path, user_module: str, name: str, message: str) -> None:
    name, message = name.format(module=user_module), message.format(module=user_module)
    with pytest.raises(ConfigError, match=message) as raised:
        load_checked(write_config(tmp_path, layers_around(name)))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def broken(:\n", r"importing module '{module}' failed: SyntaxError: "),
        ("raise RuntimeError('no GPU here')\n", r"importing module '{module}' failed: RuntimeError: no GPU here"),
        (
            "import no_such_dependency_xyz\n",
            r"cannot import module '{module}': No module named 'no_such_dependency_xyz'",
        ),
    ],
)
def test_a_broken_user_module_is_a_config_error(tmp_path: Path, source: str, message: str) -> None:
    module = f"broken_blocks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(source)
    with pytest.raises(ConfigError, match=r"^model\.layers\[1\]: " + message.format(module=module)):
        load_checked(write_config(tmp_path, layers_around(f"{module}:Pool")))


def test_an_import_path_to_something_that_is_not_a_block(tmp_path: Path, user_module: str) -> None:
    with pytest.raises(ConfigError, match=rf"^model\.layers\[1\]: '{user_module}:NOT_A_BLOCK' is not a block; "):
        load_checked(write_config(tmp_path, layers_around(f"{user_module}:NOT_A_BLOCK")))


def test_a_function_that_returns_no_module_fails_at_build(tmp_path: Path) -> None:
    layers = layers_around("os:getcwd")
    config = load_checked(write_config(tmp_path, layers))  # no arguments to check: fine until built
    with pytest.raises(ConfigError, match=r"^model\.layers\[1\]\.os:getcwd: 'os:getcwd' did not return an nn\.Module"):
        build_model(model_spec(config.model.layers, (1, 8, 8), import_paths=config.import_paths))


def test_import_object_directly() -> None:
    assert import_object("torch.nn:Linear") is nn.Linear
    with pytest.raises(ConfigError, match=r"^'torch\.nn\.Linear' is not an import path"):
        import_object("torch.nn.Linear")


# --- the decorator -------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_registry")
def test_register_block_class_by_decorator() -> None:
    @register_block("double_then_project")
    class DoubleThenProject(nn.Module):
        def __init__(self, in_features: int, width: int = 3) -> None:
            super().__init__()
            self.project = nn.Linear(in_features, width)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.project(2 * x)

    assert "double_then_project" in BLOCKS.names()
    layers = [{"double_then_project": {"width": 5}}, {"linear": {"out_features": "classes"}}]
    check_layers(layers)
    model = build_model(model_spec(layers, (6,)))
    assert isinstance(model.layers[0], DoubleThenProject)
    assert model.layers[0].project.in_features == 6
    assert model(torch.randn(2, 6)).shape == (2, 3)
    with pytest.raises(ConfigError, match=r"^model\.layers\[0\]\.double_then_project\.width: input should be"):
        check_layers([{"double_then_project": {"width": "wide"}}])


@pytest.mark.usefixtures("restore_registry")
def test_register_block_factory_by_decorator_in_the_users_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's module that registers a short name when imported, named by import_paths + a layer import."""
    module = f"registering_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from torch import nn
            import torchport

            @torchport.register_block("{name}")
            def clamp(low: float = 0.0, high: float = 1.0) -> nn.Module:
                return nn.Hardtanh(low, high)
            """
        ).replace("{name}", f"{module}_clamp")
    )
    sys.path.insert(0, str(tmp_path))
    importlib.import_module(module)
    monkeypatch.delitem(sys.modules, module)
    layers = [{f"{module}_clamp": {"high": 0.5}}, {"linear": {"out_features": "classes"}}]
    model = build_model(model_spec(layers, (4,)))
    assert model.layers[0](torch.full((1, 4), 9.0)).max().item() == 0.5


@pytest.mark.usefixtures("restore_registry", "isolated_imports")
def test_plugins_key_imports_a_module_that_registers_short_names(tmp_path: Path) -> None:
    """`plugins: [module]` beside the config: the module's @register_block names work in model.layers."""
    module = f"plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from torch import nn\nimport torchport\n\n"
        f"@torchport.register_block('{module}_halve')\n"
        "class Halve(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x / 2\n"
    )
    config = {
        "plugins": [module],
        "data": {"source": "iris"},
        "model": {"layers": [f"{module}_halve", {"linear": {"out_features": "classes"}}]},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        loaded = load_checked(path)
        assert loaded.plugins == [module] and f"{module}_halve" in BLOCKS
        bad = dict(config, plugins=["no_such_plugin_module"])
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError, match=r"^plugins\[0\]: cannot import module 'no_such_plugin_module'"):
            load_checked(path)
    finally:
        sys.modules.pop(module, None)


@pytest.mark.usefixtures("restore_registry")
def test_registering_another_block_under_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="block 'relu' is already registered"):
        register_block("relu")(lambda: nn.Identity())


# --- unknown names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("maxpool", "; did you mean 'maxpool2d'?"),
        ("Conv2d", "; did you mean 'conv2d'?"),
        ("lienar", "; did you mean 'linear'?"),
        ("transformer_encoder", "; did you mean 'transformer_encoder_layer'?"),
        ("zzzzzz", ""),
    ],
)
def test_unknown_block_suggests_the_closest(name: str, hint: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_layers(["relu", name])
    assert str(raised.value).startswith(f"model.layers[1]: unknown block '{name}'{hint} (see `torchport blocks`")


def test_registry_of_another_kind_names_its_kind() -> None:
    registry: Registry[int] = Registry("widget")
    registry.register("alpha", 1)
    assert registry.resolve("alpha") == 1 and "alpha" in registry and registry.names() == ["alpha"]
    with pytest.raises(
        ConfigError, match=r"^x\.y: unknown widget 'alpah'; did you mean 'alpha'\? \(expected one of: alpha\)$"
    ):
        registry.resolve("alpah", where="x.y")


def test_a_lazy_name_is_listed_and_checked_without_importing_it() -> None:
    """What config validation relies on: names() and check() never import; get() imports, and says why it failed."""
    registry: Registry[object] = Registry("gadget")
    registry.register_lazy("far", "no_such_module_abc:Thing")
    assert registry.names() == ["far"] and registry.check("far", where="k") == "far"
    with pytest.raises(ConfigError, match=r"^k: unknown gadget 'fra'; did you mean 'far'\? \(expected one of: far\)$"):
        registry.check("fra", where="k")
    with pytest.raises(ConfigError, match=r"^k: cannot import module 'no_such_module_abc'"):
        registry.get("far", where="k")
    with pytest.raises(ValueError, match="gadget 'far' is already registered"):
        registry.register_lazy("far", "elsewhere:Thing")


LAZY_BUILT_INS = [
    (registry, name) for registry in (DATA_SOURCES, RUNTIMES, CLIENTS, VARIANTS) for name in registry.names()
]


@pytest.mark.parametrize(("registry", "name"), LAZY_BUILT_INS, ids=lambda x: x if isinstance(x, str) else x.kind)
def test_every_built_in_import_path_resolves(registry: Registry[Any], name: str) -> None:
    """A typo in registry.py's import paths would only show when a user picked that name."""
    item = registry.get(name)
    assert item is not None
    if registry in (RUNTIMES, CLIENTS):
        assert item.name == name


def test_blocks_command_lists_every_block_with_its_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["blocks"]) == 0
    out = capsys.readouterr().out
    for name in [*BLOCKS.names(), "residual"]:
        assert name in out
    assert "out_channels" in out and "kernel_size" in out and "hidden_size" in out
    assert "in_channels" not in out and "in_shape" not in out, "inferred arguments are not the user's to give"
