"""A real browser: onnxruntime-web (WASM, one thread) in headless Chromium.

``browser_server.mjs`` serves ``browser_index.html``, the bundle and onnxruntime-web's ``dist/`` from 127.0.0.1,
starts Chromium with its own headless flags, and writes what the page POSTs back. Shipped into
``bundle/runners/browser/``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from torchport.runtimes.base import Runtime, node_modules, node_modules_env, which_node

README = """
# Browser runner (onnxruntime-web, WASM, headless Chromium)

`node browser_server.mjs BUNDLE OUT_DIR [--artifact model.onnx] [--chromium /usr/bin/chromium]` serves
`browser_index.html`, the bundle and onnxruntime-web's `dist/` folder from 127.0.0.1, opens the page in headless
Chromium, and writes the outputs the page posts back (`result.json` + raw little-endian `<output>.bin`).
The page checks every SHA-256 with WebCrypto and refuses paths that are absolute or contain `..`.
With `--serve` it only serves: open the printed URL in any browser. Needs Node.js 18+,
`npm install onnxruntime-web` and Chromium (`apt-get install chromium`). No Python.
"""


def chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    for candidate in (explicit, "/usr/bin/chromium", "chromium", "chromium-browser"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def missing() -> str | None:
    if which_node() is None:
        return "node is not on PATH (apt-get install nodejs)"
    found = node_modules()
    if found is None or not (found / "onnxruntime-web" / "dist").is_dir():
        return "onnxruntime-web is not installed (make node_modules, or set TORCHPORT_NODE_MODULES)"
    if chromium() is None:
        return "chromium is not installed (apt-get install chromium)"
    return None


def command(bundle: Path, runner_dir: Path, artifact: str, out: Path) -> list[str]:
    server = str(runner_dir / "browser_server.mjs")
    node = which_node() or "node"
    return [node, server, str(bundle), str(out), "--artifact", artifact, "--chromium", chromium() or "chromium"]


RUNTIME = Runtime(
    name="browser",
    engine="onnxruntime-web",
    kinds=("onnx",),
    precisions=("fp32", "int8"),
    files=("browser_server.mjs", "browser_index.html", "bundle_checks.mjs"),
    readme=README,
    missing=missing,
    command=command,
    env=node_modules_env,
    timeout_s=120.0,
)
