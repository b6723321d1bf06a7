"""Standard backbones by import path: a torchvision factory function works as a block, with no download."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision  # noqa: F401  (a core dependency: a broken install fails here, never skips)

from torchport.errors import ConfigError
from torchport.models.compose import build_model, check_layers

from .helpers import model_spec

RESNET = "torchvision.models:resnet18"
SHAPE = (3, 32, 32)  # tiny RGB images: resnet18 downsamples 32x32 to 1x1 and still runs


def resnet_layers(**args: object) -> list[object]:
    return [{RESNET: {"num_classes": "classes", "weights": None, **args}}]


def test_resnet18_by_import_path_builds_trains_and_exports_with_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(model_spec(resnet_layers(), SHAPE, num_outputs=2))
    x = torch.rand(4, *SHAPE) * 255
    logits = model(x)
    assert logits.shape == (4, 2)  # `classes` became num_classes
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1])).backward()
    assert all(p.grad is not None for p in model.parameters())

    model.eval()
    path = tmp_path / "resnet.onnx"
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        program = torch.onnx.export(
            model,
            (x[:1],),
            dynamo=True,
            input_names=["input"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
            opset_version=18,
        )
    assert program is not None
    program.save(str(path))

    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x).numpy()
    (got,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_check_layers_accepts_the_backbone_before_the_data_is_known() -> None:
    check_layers(resnet_layers())


@pytest.mark.parametrize(
    ("args", "key"),
    [({"weights": "IMAGENET1K_V1"}, "weights"), ({"weights": None, "pretrained": True}, "pretrained")],
)
def test_pretrained_weights_are_refused_naming_the_key(args: dict[str, object], key: str) -> None:
    layers = [{RESNET: {"num_classes": "classes", **args}}]
    message = rf"^model\.layers\[0\]\.{RESNET}\.{key}: pretrained weights would be downloaded.*{key}: null"
    with pytest.raises(ConfigError, match=message):
        check_layers(layers)


def test_an_unknown_backbone_names_the_layer() -> None:
    with pytest.raises(ConfigError, match=r"^model\.layers\[0\]"):
        check_layers([{"torchvision.models:resnet19": {"num_classes": "classes"}}])
