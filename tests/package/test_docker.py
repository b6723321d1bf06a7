"""docker/serve.Dockerfile without a Docker engine: its steps run for real, on this machine, in a fresh venv.

A small interpreter plays the Dockerfile into a folder that stands for the image's root: COPY copies from the
repository (minus the Dockerfile's .dockerignore), RUN runs ``docker/build-steps.sh`` in a fresh ``python -m venv``,
ENV sets the environment, and the ENTRYPOINT + CMD start ``torchport serve`` on a bundle put where a volume would
mount it (/mnt/models), then the HEALTHCHECK command must fail before the server is ready and pass once it is.

What differs from a real build, and why it is honest: the venv is created beforehand (the script uses one that
exists) with the project's installed dependencies importable through a ``.pth`` file (every package of .venv but
torchport itself), and pip runs with ``PIP_NO_INDEX`` and build isolation off, so torch is not downloaded again;
the script's own commands are unchanged, and torchport is built and installed from the copied sources into the
fresh venv. Paths under /opt and /mnt lead into the stand-in root, the server binds 127.0.0.1 instead of 0.0.0.0,
and port 8080 becomes a free port.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from torchport.serve.local import free_port

from .helpers import assert_close, golden, infer

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "serve.Dockerfile"
READY_WITHIN_S = 60  # the HEALTHCHECK's --start-period

pytestmark = pytest.mark.slow


def instructions(text: str) -> Iterator[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments left out."""
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            yield keyword.upper(), rest.strip()


@dataclass
class StandIn:
    """The image being built: a folder for its root, the build's environment, and what it will run."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    run_env: dict[str, str] = field(default_factory=dict)  # pip settings for this machine (see the module doc)
    exec_form: dict[str, list[str]] = field(default_factory=dict)  # ENTRYPOINT, CMD, HEALTHCHECK
    seen: dict[str, str] = field(default_factory=dict)  # every other instruction's arguments, by keyword

    def inside(self, text: str) -> str:
        """Image paths (/opt/..., /mnt/...) as paths in the stand-in root."""
        return re.sub(r"(?<![\w.$])/(opt|mnt)(?=/|\b)", lambda m: f"{self.root}/{m.group(1)}", text)

    def host(self, image_path: str) -> Path:
        base = image_path if image_path.startswith("/") else f"{self.workdir.rstrip('/')}/{image_path}"
        return self.root / base.lstrip("/")

    def copy(self, arguments: str, ignored: list[str]) -> None:
        *sources, destination = shlex.split(arguments)
        target = self.host(destination)
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns(*ignored), dirs_exist_ok=True)
            else:
                into = target if destination.endswith("/") or len(sources) > 1 else target.parent
                into.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, into / (origin.name if into == target else target.name))

    def set_env(self, arguments: str) -> None:
        for pair in shlex.split(arguments):
            key, _, value = pair.partition("=")
            self.env[key] = self.inside(re.sub(r"\$\{?(\w+)\}?", self._expand, value))

    def _expand(self, variable: re.Match[str]) -> str:
        return self.env.get(variable.group(1), os.environ.get(variable.group(1), ""))

    def run(self, command: str) -> None:
        env = {**os.environ, **self.env, **self.run_env}
        done = subprocess.run(
            ["sh", "-c", self.inside(command)], cwd=self.host(self.workdir), env=env,
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"RUN {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    def build(self, dockerfile: Path) -> None:
        ignore_file = dockerfile.with_name(dockerfile.name + ".dockerignore")
        lines = [line.strip() for line in ignore_file.read_text().splitlines()]
        ignored = [line.removeprefix("**/") for line in lines if line and not line.startswith("#")]
        for keyword, arguments in instructions(dockerfile.read_text()):
            if keyword == "ARG":
                name, _, default = arguments.partition("=")
                self.env[name] = default
            elif keyword == "WORKDIR":
                self.workdir = arguments
                self.host(arguments).mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":
                self.copy(arguments, ignored)
            elif keyword == "RUN":
                self.run(arguments)
            elif keyword == "ENV":
                self.set_env(arguments)
            elif keyword in ("ENTRYPOINT", "CMD"):
                self.exec_form[keyword] = json.loads(arguments)
            elif keyword == "HEALTHCHECK":
                options, _, command = arguments.partition(" CMD ")
                self.seen[keyword] = options
                self.exec_form[keyword] = json.loads(command)
            else:
                self.seen[keyword] = arguments

    def command(self, keyword: str, port: int) -> list[str]:
        """An exec form as it runs here: image paths inside the root, 127.0.0.1 and ``port`` for 0.0.0.0:8080."""
        words = self.exec_form[keyword]
        return [self.inside(w).replace("0.0.0.0", "127.0.0.1").replace("8080", str(port)) for w in words]


def fresh_venv(venv: Path, deps: Path) -> None:
    """A new venv that sees every package of this one but torchport (the build must install its own)."""
    site = Path(sysconfig.get_paths()["purelib"])
    deps.mkdir()
    for entry in site.iterdir():
        if not re.match(r"(torchport|__editable__|__pycache__)|.*\.pth$", entry.name):
            (deps / entry.name).symlink_to(entry)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    fresh_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(fresh_site) / "_deps.pth").write_text(f"{deps}\n")
    # the venv's own old setuptools would hide the newer one torch requires
    subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=True, timeout=120)


def healthy(image: StandIn, port: int, env: dict[str, str]) -> bool:
    check = subprocess.run(image.command("HEALTHCHECK", port), env=env, capture_output=True, timeout=10, check=False)
    return check.returncode == 0


def wait_healthy(image: StandIn, port: int, env: dict[str, str], server: subprocess.Popen[bytes], log: Path) -> None:
    """Run the HEALTHCHECK as Docker would until it passes, within the start period, while the server lives."""
    deadline = time.monotonic() + READY_WITHIN_S
    while not healthy(image, port, env):
        assert server.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "not healthy within the start period"
        time.sleep(0.5)


def test_the_image_builds_serves_and_turns_healthy(digits_bundle: Path, tmp_path: Path) -> None:
    image = StandIn(tmp_path / "image", run_env={"PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"})
    fresh_venv(image.root / "opt" / "venv", tmp_path / "deps")
    image.build(DOCKERFILE)
    assert image.env["PATH"].startswith(f"{image.root}/opt/venv/bin:")
    assert image.seen["USER"].split(":")[0] != "0" and image.seen["EXPOSE"] == "8080"
    assert "--start-period=60s" in image.seen["HEALTHCHECK"]
    served = subprocess.run(
        [image.root / "opt/venv/bin/python", "-c", "import torchport; print(torchport.__file__)"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert served.startswith(str(image.root / "opt" / "venv")), served  # the fresh install, not this checkout

    shutil.copytree(digits_bundle, image.root / "mnt" / "models")  # docker run -v BUNDLE:/mnt/models
    port = free_port()
    env = {**os.environ, **image.env}
    assert not healthy(image, port, env)  # nothing listens yet: unhealthy
    with open(tmp_path / "serve.log", "wb") as log:
        command = image.command("ENTRYPOINT", port) + image.command("CMD", port)
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=image.root)
        try:
            wait_healthy(image, port, env, server, tmp_path / "serve.log")
            inputs, outputs = golden(digits_bundle)
            assert_close(infer(port, inputs), outputs, digits_bundle)
        finally:
            server.terminate()
            server.wait(timeout=30)
