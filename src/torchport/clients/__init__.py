"""Clients of `torchport serve` in languages that reach a model over the Open Inference Protocol v2: C#, R, Java.

Each is a small standalone program in the folder of its language beside this module (with its README.md), shipped
into ``bundle/clients/<language>/``. It sends the golden inputs as JSON and with the binary tensor extension,
checks both answers against the golden outputs, and writes ``result.json`` plus the raw outputs like a runner, so
``torchport conformance --server URL`` judges and lists clients and runners in one table. They are registered by
name in ``torchport.registry.CLIENTS`` (csharp, r, java-v2).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from torchport.runtimes.base import Runtime, cached_build, copy_sources, first_missing_tool, project_files, run_build

TIMEOUT_S = 120.0


def _csharp_missing() -> str | None:
    return first_missing_tool({"mcs": "apt-get install mono-complete", "mono": "apt-get install mono-complete"})


def _csharp_build(folder: Path) -> None:
    source = copy_sources(CSHARP, folder)
    argv = [shutil.which("mcs") or "mcs", f"-out:{folder / 'client.exe'}", "-r:System.Net.Http.dll"]
    argv += ["-r:System.Web.Extensions.dll", str(source / "Client.cs")]  # what clients/csharp/README.md says
    run_build("C# client", argv, folder)


def _csharp_command(bundle: Path, client_dir: Path, url: str, out: Path) -> list[str]:
    exe = cached_build(CSHARP, bundle, "", _csharp_build) / "client.exe"
    return [shutil.which("mono") or "mono", str(exe), str(bundle), url, str(out)]


R_PACKAGES = ("jsonlite", "curl", "openssl")


@functools.cache
def _r_missing() -> str | None:
    absent = first_missing_tool({"Rscript": "apt-get install r-base-core"})
    if absent:
        return absent
    probe = "for (p in commandArgs(TRUE)) if (!requireNamespace(p, quietly = TRUE)) cat(p, '')"
    try:
        proc = subprocess.run(
            ["Rscript", "-e", probe, *R_PACKAGES], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Rscript does not answer: {exc}"
    lacking = proc.stdout.split()
    if lacking:
        debs = " ".join(f"r-cran-{name}" for name in lacking)
        return f"the R package(s) {', '.join(lacking)} are not installed (apt-get install {debs})"
    return None


def _r_command(bundle: Path, client_dir: Path, url: str, out: Path) -> list[str]:
    return [shutil.which("Rscript") or "Rscript", str(client_dir / "client.R"), str(bundle), url, str(out)]


def _java_missing() -> str | None:
    return first_missing_tool({"java": "apt-get install default-jdk-headless", "javac": "a JDK, not a JRE"})


def _java_build(folder: Path) -> None:
    source = copy_sources(JAVA, folder)
    javac = shutil.which("javac") or "javac"  # --release 11: the classes run on any JVM the client supports
    run_build("Java client", [javac, "--release", "11", "-d", str(folder), str(source / "Client.java")], folder)


def _java_command(bundle: Path, client_dir: Path, url: str, out: Path) -> list[str]:
    classes = cached_build(JAVA, bundle, "", _java_build)
    return [shutil.which("java") or "java", "-cp", str(classes), "Client", str(bundle), url, str(out)]


def _client(
    name: str,
    language: str,
    engine: str,
    missing: Callable[[], str | None],
    command: Callable[[Path, Path, str, Path], list[str]],
) -> Runtime:
    return Runtime(
        name=name,
        engine=engine,
        kinds=("onnx",),
        precisions=("fp32",),
        files=project_files(f"../clients/{language}"),
        source_dir=f"../clients/{language}",
        readme="",
        missing=missing,
        command=command,
        timeout_s=TIMEOUT_S,
        over_server=True,
        bundle_folder=f"clients/{language}",
    )


CSHARP = _client("csharp", "csharp", "v2-csharp", _csharp_missing, _csharp_command)
R = _client("r", "r", "v2-r", _r_missing, _r_command)
JAVA = _client("java-v2", "java", "v2-java", _java_missing, _java_command)
