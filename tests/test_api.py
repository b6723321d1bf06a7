"""The Python API as a notebook uses it: ``import torchport as tp``, no console anywhere, nothing written outside
the run directory, and results as objects (a verification report, a bundle that predicts, a server to call)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits

import torchport as tp
from torchport.errors import BundleError, ConfigError, UsageError

API = {
    "__version__",
    "Bundle",
    "Config",
    "ServeSettings",
    "load_config",
    "register_block",
    "train",
    "export",
    "verify",
    "optimize",
    "conformance",
    "bench",
    "serve",
    "run",
}
TINY_CNN = {
    "name": "notebook",
    "data": {"source": "digits"},
    "model": {
        "layers": [
            {"conv2d": {"out_channels": 8, "kernel_size": 3, "padding": 1}},
            "relu",
            "flatten",
            {"linear": {"out_features": "classes"}},
        ]
    },
    "train": {"epochs": 2},
    "export": {"aoti": False},
}

# The acceptance, run as a user's notebook would: a fresh interpreter in an empty working directory, with HOME and
# TMPDIR of its own so that every file it leaves anywhere can be listed afterwards.
NOTEBOOK = """
import json
import numpy as np
import onnxruntime as ort
from sklearn.datasets import load_digits
import torchport as tp
config = tp.Config.from_dict(json.loads(CONFIG))
run = tp.train(config, run_dir="run")
bundle = tp.export(run)
report = tp.verify(bundle)
opened = tp.Bundle.open("run/bundle")
images = load_digits().images[:, None]  # raw pixel values 0-16, float64, (1797, 1, 8, 8)
ours = opened.predict(images)
session = ort.InferenceSession("run/bundle/model.onnx", providers=["CPUExecutionProvider"])
names = [output.name for output in session.get_outputs()]
theirs = dict(zip(names, session.run(None, {"input": images.astype(np.float32)})))
one = opened.predict(images[0])
print(json.dumps({
    "epochs": run.summary["epochs"],
    "passed": report.passed,
    "artifacts": [result.artifact for result in report.results],
    "outputs": sorted(ours),
    "equal": all(np.array_equal(ours[name], theirs[name]) for name in names),
    "one_sample": all(np.array_equal(one[name], ours[name][0]) for name in names),
    "accuracy": float((ours["logits"].argmax(axis=1) == load_digits().target).mean()),
}))
"""


def everything_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def test_notebook_trains_exports_verifies_and_predicts_like_onnx_runtime(tmp_path: Path) -> None:
    """A config from a dict, two epochs, export, verify, then ``Bundle.open(...).predict`` on raw digits equals a
    plain ONNX Runtime session's output; nothing printed, no file written outside the run directory."""
    home, scratch, work, caches = (tmp_path / name for name in ("home", "tmp", "work", "caches"))
    for folder in (home, scratch, work):
        folder.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "TMPDIR": str(scratch),
        "CONFIG": json.dumps(TINY_CNN),
        # Libraries' own caches, not torchport's: ONNX Runtime's telemetry writes a device id under ~/.cache and a
        # session file in TMPDIR when imported; importing torch._dynamo makes $TMPDIR/torchinductor_<user>.
        "ORT_DISABLE_TELEMETRY": "1",
        "TORCHINDUCTOR_CACHE_DIR": str(caches),
    }
    script = "import os\nCONFIG = os.environ['CONFIG']\n" + NOTEBOOK
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"the API printed on stdout: {done.stdout[-2000:]}"
    result = json.loads(lines[0])
    assert result["epochs"] == 2 and result["passed"] and result["artifacts"] == ["model.onnx"]
    assert result["outputs"] == ["logits", "probabilities"]
    assert result["equal"] and result["one_sample"]
    assert result["accuracy"] > 0.5, result  # two epochs of a tiny CNN: a trained model, not chance (0.1)
    for line in ("epoch 1/2", "bundle written", "verified"):
        assert line not in done.stderr, f"quiet by default, yet stderr says '{line}'"
    assert [path.name for path in work.iterdir()] == ["run"]
    assert everything_under(home) == [] and everything_under(scratch) == []


def test_dir_lists_the_api_and_resolving_it_imports_no_torch() -> None:
    probe = (
        "import json, sys\nimport torchport as tp\n"
        "names = dir(tp)\nresolved = all(getattr(tp, name) is not None for name in tp.__all__)\n"
        "print(json.dumps({'dir': names, 'all': tp.__all__, 'resolved': resolved, 'torch': 'torch' in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(done.stdout)
    listed, exported = set(result["dir"]), set(result["all"])
    assert listed >= exported >= API
    assert result["resolved"] and result["torch"] is False
    assert not [name for name in result["dir"] if not name.startswith("__") and name not in result["all"]]


def test_version_is_the_package_metadata() -> None:
    expected = importlib.metadata.version("torchport")
    assert tp.__version__ == expected
    done = subprocess.run(
        [sys.executable, "-c", "import torchport; print(torchport.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == expected


def test_stage_names_stay_functions_once_their_subpackages_are_imported() -> None:
    """``torchport.train`` (and export, verify, bench, serve) is a subpackage too; importing it must not turn
    ``tp.train`` into a module."""
    import torchport.api
    import torchport.bench.bundle
    import torchport.export.onnx
    import torchport.serve.settings
    import torchport.train.loop
    import torchport.verify.bundle

    for name in ("train", "export", "verify", "bench", "serve"):
        assert getattr(tp, name) is getattr(torchport.api, name)
    from torchport.train import loop

    assert loop.train is not tp.train


def test_config_from_dict_is_a_file_config_without_the_file(tmp_path: Path) -> None:
    raw = {"model": {"layers": ["flatten", {"linear": {"out_features": "classes"}}]}, "data": {"source": "csv"}}
    raw["data"]["path"] = "table.csv"
    config = tp.Config.from_dict(raw, base_dir=tmp_path, overrides=["train.epochs=3"])
    assert config.train.epochs == 3 and config.data.path == (tmp_path / "table.csv").resolve()
    assert "epochs" not in raw.get("train", {}) and raw["data"]["path"] == "table.csv"  # the caller's dict as it was
    with pytest.raises(ConfigError, match=r"^train\.epohcs: unknown key; did you mean 'epochs'\?"):
        tp.Config.from_dict({**raw, "train": {"epohcs": 2}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        tp.Config.from_dict([("model", {})])  # type: ignore[arg-type]


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_verify_writes_nothing_unless_asked_to_save(digits_run: Path) -> None:
    before = tree_digest(digits_run)
    report = tp.verify(digits_run / "bundle")
    assert tree_digest(digits_run) == before
    assert report.passed and [r.artifact for r in report.results] == ["model.onnx"] and not report.failures()
    assert "model.onnx" in str(report) and "verified" in str(report)
    saved = tp.verify(digits_run / "bundle", save=True)
    manifest = json.loads((digits_run / "bundle" / "manifest.json").read_text())
    assert [entry["artifact"] for entry in manifest["verification"]] == ["model.onnx"]
    assert manifest["verification"][0]["passed"] is saved.passed is True


def test_progress_goes_to_stderr_and_quiet_prints_nothing(digits_run: Path, capfd: pytest.CaptureFixture[str]) -> None:
    tp.verify(digits_run / "bundle")
    assert capfd.readouterr() == ("", "")
    tp.verify(digits_run / "bundle", progress=True)
    out, err = capfd.readouterr()
    assert out == "" and "parity against the reference" in err and "verified" in err


def test_bundle_open_refuses_a_tampered_artifact_in_one_line(digits_run: Path) -> None:
    model = digits_run / "bundle" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError) as caught:
        tp.Bundle.open(digits_run / "bundle")
    message = str(caught.value)
    assert "'model.onnx' fails its checksum" in message and "\n" not in message


def test_bundle_describes_itself_and_predicts_one_sample_or_a_batch(exported_digits: Path) -> None:
    bundle = tp.Bundle.open(exported_digits / "bundle")
    assert bundle.name == "digits" and bundle.task == "classification" and os.fspath(bundle) == str(bundle.path)
    assert bundle.labels == [str(digit) for digit in range(10)] and bundle.artifacts[0] == "model.onnx"
    assert [spec.name for spec in bundle.inputs] == ["input"] and bundle.inputs[0].shape == ["batch", 1, 8, 8]
    images = load_digits().images[:16, None].astype(np.uint8)  # integers: cast to float32 as the manifest says
    batch = bundle.predict(images)
    assert batch["logits"].shape == (16, 10) and batch["logits"].dtype == np.float32
    one = bundle.predict(images[3])
    assert one["probabilities"].shape == (10,)
    np.testing.assert_array_equal(one["probabilities"], batch["probabilities"][3])
    assert bundle.predict({"input": images})["logits"].shape == (16, 10)
    assert bundle.classify(images[0]) == "0" and len(bundle.classify(images)) == 16
    assert isinstance(bundle.session(), ort.InferenceSession) and bundle.session() is bundle.session()


def test_predict_in_openvino_agrees_with_onnx_runtime(exported_digits: Path) -> None:
    import openvino  # noqa: F401  (a core dependency: never skipped)

    bundle = tp.Bundle.open(exported_digits / "bundle")
    images = load_digits().images[:32, None]
    theirs = bundle.predict(images, runtime="openvino")
    ours = bundle.predict(images)
    np.testing.assert_allclose(theirs["logits"], ours["logits"], rtol=1e-4, atol=1e-4)
    assert type(bundle.session(runtime="openvino")).__name__ == "CompiledModel"


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (np.zeros((3, 8, 8)), r"^input 'input': expected shape \(batch, 1, 8, 8\) or one sample \(1, 8, 8\), got"),
        (np.zeros((2, 1, 8, 9)), r"^input 'input': expected shape .* got \(2, 1, 8, 9\)$"),
        (np.array([["a"]]), r"^input 'input': expected numbers \(float32\), got <U1$"),
        ({"image": np.zeros((1, 8, 8))}, r"^input 'image': not an input of digits \(inputs: input\)$"),
    ],
    ids=["wrong dimension", "wrong rank", "strings", "unknown name"],
)
def test_predict_refuses_bad_input_in_one_line_naming_the_tensor(
    exported_digits: Path, bad: object, expected: str
) -> None:
    bundle = tp.Bundle.open(exported_digits / "bundle")
    with pytest.raises(UsageError, match=expected):
        bundle.predict(bad)  # type: ignore[arg-type]


def test_an_unknown_artifact_or_runtime_is_one_line(exported_digits: Path) -> None:
    bundle = tp.Bundle.open(exported_digits / "bundle")
    with pytest.raises(UsageError, match=r"^artifact 'int4': not one that onnxruntime runs .* \(choose from: model"):
        bundle.session(artifact="int4")
    with pytest.raises(UsageError, match=r"^runtime 'tensorrt': expected one of onnxruntime, openvino$"):
        bundle.session(runtime="tensorrt")  # type: ignore[arg-type]


def test_serve_in_the_background_answers_over_http_and_stops(exported_digits: Path) -> None:
    bundle = tp.Bundle.open(exported_digits / "bundle")
    images = load_digits().images[:2, None].astype(np.float32)
    request = {
        "inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": images.ravel().tolist()}]
    }
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with tp.serve(bundle, port=0, background=True) as server:
        assert server.running and server.url.startswith("http://127.0.0.1:")
        post = urllib.request.Request(
            f"{server.url}/v2/models/digits/infer",
            data=json.dumps(request).encode(),
            headers={"Content-Type": "application/json"},
        )
        with direct.open(post, timeout=30) as reply:
            outputs = {output["name"]: output for output in json.load(reply)["outputs"]}
    assert not server.running and server.process.returncode == 0
    logits = np.asarray(outputs["logits"]["data"], dtype=np.float32).reshape(outputs["logits"]["shape"])
    np.testing.assert_allclose(logits, bundle.predict(images)["logits"], rtol=1e-5, atol=1e-5)
    with pytest.raises(OSError):
        direct.open(f"{server.url}/v2/health/ready", timeout=5)


def test_serve_blocks_quietly_until_sigterm(exported_digits: Path, tmp_path: Path) -> None:
    """``tp.serve(bundle, port=...)`` without ``background`` is `torchport serve` in this process: it answers until
    SIGTERM, then exits 0; quiet (no start-up or access log) without ``progress``."""
    from torchport.serve.local import free_port

    port = free_port()
    script = f"import torchport as tp\ntp.serve({str(exported_digits / 'bundle')!r}, port={port})\n"
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        for _ in range(600):
            try:
                with direct.open(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert server.poll() is None, server.communicate()[1][-2000:]
                time.sleep(0.1)
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, err[-2000:]
    assert out == b"" and err == b"", err[-2000:]


def test_serve_refuses_a_broken_bundle_before_starting(digits_run: Path) -> None:
    (digits_run / "bundle" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError, match=r"^bundle file 'model.onnx' fails its checksum"):
        tp.serve(digits_run / "bundle", port=0, background=True)


def test_conformance_and_bench_return_results_and_write_nothing(digits_run: Path) -> None:
    before = tree_digest(digits_run)
    report = tp.conformance(digits_run / "bundle", ["python"])
    assert report.passed and [(r.runtime, r.status) for r in report.results] == [("python", "passed")]
    assert "conformance: 1 of 1 runtime runs passed" in str(report)
    result = tp.bench(digits_run / "bundle", batch_sizes=[1], threads=[1], compile=False, iterations=3, budget_s=0.05)
    assert {"pytorch eager", "ort fp32"} <= set(result.contenders()) and result.batches == [1]
    assert tree_digest(digits_run) == before


def test_train_refuses_an_invalid_block_before_training(tmp_path: Path) -> None:
    config = tp.Config.from_dict({"model": {"layers": [{"conv2d": {"kernal_size": 3}}]}})
    with pytest.raises(ConfigError, match=r"^model\.layers\[0\]\.conv2d"):
        tp.train(config, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_optimize_and_run_from_python(tmp_path: Path) -> None:
    """``tp.run`` is the whole pipeline (here without variants or benchmark); ``tp.optimize`` then adds the int8
    variant, which ``Bundle.predict`` runs by its variant name."""
    config = tp.Config.from_dict(
        {**TINY_CNN, "export": {"aoti": False, "variants": ["int8"]}, "bench": {"budget_seconds": 0}}
    )
    result = tp.run(config, tmp_path / "run")
    assert result.passed and result.report.is_file() and (result.bundle / "model.int8.onnx").is_file()
    again = tp.optimize(result.bundle)
    assert again.passed and again.kept == ["model.int8.onnx"]
    bundle = tp.Bundle.open(result.bundle)
    images = load_digits().images[:64, None]
    agree = bundle.predict(images, artifact="int8")["logits"].argmax(1) == bundle.predict(images)["logits"].argmax(1)
    assert agree.mean() >= 0.9
    report = tp.verify(result.bundle)
    assert report.passed and [r.artifact for r in report.results] == ["model.onnx", "model.int8.onnx"]


def test_a_background_server_keeps_its_api_key_off_the_command_line(digits_run: Path) -> None:
    """The key reaches the child through its environment: `ps` shows command lines to every local user."""
    import urllib.error

    key = "not-for-ps-eyes-7f3a"
    settings = tp.ServeSettings(port=0, api_key=key)
    with tp.serve(digits_run / "bundle", settings=settings, background=True) as server:
        assert key.encode() not in Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        name = tp.Bundle.open(digits_run / "bundle").name
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.url}/v2/models/{name}", timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(f"{server.url}/v2/models/{name}", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
