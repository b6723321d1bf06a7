"""Name the first layer whose output diverges between an ONNX artifact and PyTorch.

The dynamo exporter records, on every ONNX node, the module scopes it came from
(``pkg.torch.onnx.name_scopes``: ``['', 'model', 'model.layers', 'model.layers.3', 'conv2d']``). The last
node of each top-level layer produces that layer's output; we expose those values as extra graph outputs, run
the artifact once, and compare them in order with PyTorch's outputs captured by forward hooks.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchport.sessions import onnxruntime_session
from torchport.verify.parity import Tolerance, compare

SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def _layer_scopes(module: nn.Module, names: list[str]) -> list[tuple[str, str, nn.Module]]:
    """(scope in the exported graph, human name, submodule) of the normalisation and each config layer."""
    network: Any = module.model
    found: list[tuple[str, str, nn.Module]] = [("model.normalize", "input normalisation", network.normalize)]
    for index, layer in enumerate(network.layers):
        human = names[index] if index < len(names) else f"model.layers[{index}] ({type(layer).__name__})"
        found.append((f"model.layers.{index}", human, layer))
    return found


def _last_outputs_by_scope(model: object, scopes: list[str]) -> dict[str, str]:
    """The output value name of the last node inside each scope, in graph (topological) order."""
    last: dict[str, str] = {}
    for node in model.graph.node:  # type: ignore[attr-defined]
        props = {p.key: p.value for p in node.metadata_props}
        if SCOPES_KEY not in props or not node.output:
            continue
        try:
            node_scopes = set(ast.literal_eval(props[SCOPES_KEY]))
        except (ValueError, SyntaxError):
            continue
        for scope in scopes:
            if scope in node_scopes:
                last[scope] = node.output[0]
    return last


def _onnx_intermediates(path: Path, values: dict[str, str], inputs: np.ndarray) -> dict[str, np.ndarray]:
    import onnx

    model = onnx.load(str(path))
    known = {v.name: v for v in model.graph.value_info}
    existing = {o.name for o in model.graph.output}
    for value in values.values():
        if value not in existing:
            model.graph.output.append(known.get(value) or onnx.ValueInfoProto(name=value))
            existing.add(value)
    session = onnxruntime_session(model.SerializeToString(), optimize=False)
    names = list(dict.fromkeys(values.values()))
    results = session.run(names, {session.get_inputs()[0].name: inputs})
    by_value = dict(zip(names, results, strict=True))
    return {scope: by_value[value] for scope, value in values.items()}


def _torch_intermediates(
    module: nn.Module, layers: list[tuple[str, str, nn.Module]], inputs: np.ndarray
) -> dict[str, np.ndarray]:
    captured: dict[str, np.ndarray] = {}
    handles = []
    for scope, _, submodule in layers:

        def hook(_m: nn.Module, _i: object, output: torch.Tensor, scope: str = scope) -> None:
            captured[scope] = output.detach().numpy()

        handles.append(submodule.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(torch.from_numpy(np.ascontiguousarray(inputs)))
    finally:
        for handle in handles:
            handle.remove()
    return captured


def first_diverging_layer(path: Path, module: nn.Module, inputs: np.ndarray, tol: Tolerance, names: list[str]) -> str:
    """A sentence naming the first layer whose output differs beyond ``tol`` (or why none could be named)."""
    import onnx

    layers = _layer_scopes(module, names)
    values = _last_outputs_by_scope(onnx.load(str(path), load_external_data=False), [s for s, _, _ in layers])
    if not values:
        return "unknown: the ONNX file carries no scope metadata to map nodes to layers"
    onnx_values = _onnx_intermediates(path, values, inputs)
    torch_values = _torch_intermediates(module, layers, inputs)
    for scope, human, _ in layers:
        if scope not in onnx_values or scope not in torch_values:
            continue
        result = compare(onnx_values[scope], torch_values[scope], tol, argmax=False)
        if not result.passed:
            return f"{human}: max abs error {result.max_abs:.3g}"
    return "the output head (after the last layer: softmax or de-normalisation)"
