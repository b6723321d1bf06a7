"""The two Python runtimes: ONNX Runtime (``python_ort.py``) and OpenVINO (``openvino_runner.py``).

Both runners are standalone scripts shipped into the bundle beside ``rawio.py``: they import NumPy and their
engine, never torchport, so a user runs them with nothing of ours installed. Conformance starts them with this
interpreter, which needs only the engine's package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from torchport.runtimes.base import Runtime

README = """
# Python + {engine} runner

`python {script} BUNDLE OUT_DIR [--artifact PATH]` runs the bundle's golden inputs and writes `result.json`
and one raw little-endian `<output>.bin` per output into OUT_DIR. Needs Python 3.11+, NumPy and `{package}`
(`pip install numpy {package}`); `rawio.py` beside it reads the bundle and checks every SHA-256.
"""


def _missing(package: str) -> str | None:
    return None if importlib.util.find_spec(package) else f"the Python package '{package}' is not installed"


def _python_runtime(name: str, engine: str, module: str, kinds: tuple[str, ...], package: str) -> Runtime:
    def command(bundle: Path, runner_dir: Path, artifact: str, out: Path) -> list[str]:
        return [sys.executable, str(runner_dir / f"{module}.py"), str(bundle), str(out), "--artifact", artifact]

    return Runtime(
        name=name,
        engine=engine,
        kinds=kinds,
        precisions=("fp32", "fp16", "int8"),
        files=(f"{module}.py", "rawio.py"),
        readme=README.format(engine=engine, script=f"{module}.py", package=package),
        missing=lambda: _missing(package),
        command=command,
    )


PYTHON = _python_runtime("python", "onnxruntime", "python_ort", ("onnx", "ort"), "onnxruntime")
OPENVINO = _python_runtime("openvino", "openvino", "openvino_runner", ("onnx",), "openvino")
