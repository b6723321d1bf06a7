"""Java + ONNX Runtime's official Java API: the Maven project in ``java_runner/``, shipped into
``bundle/runners/java/``.

Built once with ``mvn package`` into the runner cache (:func:`~torchport.runtimes.base.cached_build`); Maven keeps
the downloaded jars in ``~/.m2``, so only the first build on a machine reaches Maven Central.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from torchport.runtimes.base import Runtime, cached_build, copy_sources, first_missing_tool, project_files, run_build

JAR = "target/torchport-runner.jar"
README = """
# Java runner (ONNX Runtime Java API)

A Maven project (Java 17, `com.microsoft.onnxruntime:onnxruntime`, CPU; the jar carries ONNX Runtime's native
library). It reads only `manifest.json` and the files it names, checks every SHA-256 it uses, refuses paths that
are absolute or contain `..`, checks the golden inputs' names, dtypes and shapes against the manifest, runs them
and writes `result.json` plus one raw little-endian `<output>.bin` per output. Needs JDK 17+ and Maven
(`apt-get install default-jdk maven`). From the bundle folder:

```sh
mvn -q -B -f runners/java/pom.xml package
java -jar runners/java/target/torchport-runner.jar . out
cat out/result.json
```

`--artifact model.int8.onnx` runs another ONNX artifact of the bundle. Exit code 2 with one line on stderr when
the bundle is refused (checksum, path, inputs), 1 on any other failure.
"""


def missing() -> str | None:
    return first_missing_tool(
        {"java": "apt-get install default-jdk-headless", "mvn": "apt-get install maven", "javac": "a JDK, not a JRE"}
    )


def build(folder: Path) -> None:
    source = copy_sources(RUNTIME, folder)
    run_build("Java runner", [shutil.which("mvn") or "mvn", "-q", "-B", "-DskipTests", "package"], source)


def command(bundle: Path, runner_dir: Path, artifact: str, out: Path) -> list[str]:
    jar = cached_build(RUNTIME, bundle, "", build) / "src" / JAR
    return [shutil.which("java") or "java", "-jar", str(jar), str(bundle), str(out), "--artifact", artifact]


RUNTIME = Runtime(
    name="java",
    engine="onnxruntime-java",
    kinds=("onnx",),
    precisions=("fp32", "fp16", "int8"),
    files=project_files("java_runner"),
    source_dir="java_runner",
    readme=README,
    missing=missing,
    command=command,
    timeout_s=120.0,
)
