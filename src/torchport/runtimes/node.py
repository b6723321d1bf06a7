"""Node.js + onnxruntime-node: ``runner.mjs`` beside this module, shipped into ``bundle/runners/node/``."""

from __future__ import annotations

from pathlib import Path

from torchport.runtimes.base import Runtime, node_modules, node_modules_env, which_node

README = """
# Node.js runner (onnxruntime-node)

`node runner.mjs BUNDLE OUT_DIR [--artifact model.onnx]` runs the golden inputs and writes `result.json` and one
raw little-endian `<output>.bin` per output into OUT_DIR. It checks every SHA-256 it uses and refuses paths that
are absolute or contain `..`. Needs Node.js 18+ and `npm install onnxruntime-node` (in your project, or point
`TORCHPORT_NODE_MODULES` at a node_modules folder that has it). No Python, no NumPy.
"""


def missing() -> str | None:
    if which_node() is None:
        return "node is not on PATH (apt-get install nodejs)"
    if node_modules() is None:
        return "onnxruntime-node is not installed (make node_modules, or set TORCHPORT_NODE_MODULES)"
    return None


def command(bundle: Path, runner_dir: Path, artifact: str, out: Path) -> list[str]:
    return [which_node() or "node", str(runner_dir / "runner.mjs"), str(bundle), str(out), "--artifact", artifact]


RUNTIME = Runtime(
    name="node",
    engine="onnxruntime-node",
    kinds=("onnx",),
    precisions=("fp32", "fp16", "int8"),
    files=("runner.mjs", "bundle_checks.mjs"),
    readme=README,
    missing=missing,
    command=command,
    env=node_modules_env,
    timeout_s=120.0,
)
