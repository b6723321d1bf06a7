"""The shape of src/: no import cycles, no module importing a layer above its own, no giant functions or files.

Read from the source with ``ast`` (lazy imports inside functions count: they are dependencies all the same), so
the rules hold for code paths a test run never takes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "torchport"
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400

# Lowest first: a module may import its own layer or a lower one. The longest matching prefix decides.
LAYERS: list[tuple[str, ...]] = [
    ("torchport.errors",),
    ("torchport.registry",),
    ("torchport.overrides",),
    ("torchport.config", "torchport.runlock"),
    ("torchport.bundle.manifest", "torchport.bundle.graph", "torchport.bundle.inspect"),
    ("torchport.sessions", "torchport.progress", "torchport.plotting", "torchport.tabular", "torchport.predict"),
    ("torchport.data",),
    ("torchport.models",),
    ("torchport.train",),
    ("torchport.export", "torchport.validate"),
    ("torchport.verify",),
    ("torchport.bundle.build",),
    ("torchport.runtimes", "torchport.clients", "torchport.serve", "torchport.serving"),
    ("torchport.runtimes.conformance",),
    ("torchport.bench", "torchport.package"),
    ("torchport.report",),
    ("torchport.pipeline",),
    ("torchport.api", "torchport.cli", "torchport.examples", "torchport"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


MODULES = {module_name(path): path for path in source_files()}


def imported_modules(name: str, path: Path) -> Iterator[str]:
    """Every torchport module ``name`` imports anywhere in its file, resolved to a module that exists."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t if t in MODULES else base for t in targets]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("torchport") and target != name:
                yield target


GRAPH = {name: set(imported_modules(name, path)) for name, path in MODULES.items()}


def layer_of(module: str) -> int:
    best, best_length = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


def find_cycle() -> list[str] | None:
    """One import cycle as a path of module names, or None (iterative DFS with colours)."""
    colour = dict.fromkeys(GRAPH, 0)  # 0 unseen, 1 on the current path, 2 done
    for start in GRAPH:
        if colour[start]:
            continue
        path, stack = [start], [iter(sorted(GRAPH[start]))]
        colour[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = 2
                stack.pop()
            elif colour[nxt] == 1:
                return [*path[path.index(nxt) :], nxt]
            elif colour[nxt] == 0:
                colour[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(GRAPH[nxt])))
    return None


def test_the_layer_table_names_every_module() -> None:
    unplaced = [name for name in MODULES if layer_of(name) < 0]
    assert not unplaced


def test_no_import_cycle_in_src() -> None:
    assert find_cycle() is None, " -> ".join(find_cycle() or [])


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
        for name, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert not upward, "\n".join(upward)


def test_the_checks_can_fail() -> None:
    """The cycle finder and the layer rule see a planted cycle and an upward import."""
    planted = {"torchport.errors": {"torchport.config"}, "torchport.config": {"torchport.errors"}}
    saved = dict(GRAPH)
    GRAPH.clear()
    GRAPH.update(planted)
    try:
        assert find_cycle() == ["torchport.errors", "torchport.config", "torchport.errors"]
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
    assert layer_of("torchport.config") > layer_of("torchport.errors")
    assert layer_of("torchport.runtimes.conformance") > layer_of("torchport.runtimes.node")


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_and_functions_stay_small(path: Path) -> None:
    lines = path.read_text().count("\n")
    assert lines <= MAX_FILE_LINES, f"{path.name}: {lines} lines (most {MAX_FILE_LINES})"
    long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"
