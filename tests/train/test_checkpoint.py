"""Checkpoints are atomic, checksummed, load with weights_only=True, and damaged ones are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchport.errors import CheckpointError
from torchport.train.checkpoint import (
    load_checkpoint,
    load_latest_good,
    save_checkpoint,
    save_step_checkpoint,
)


def _state(value: float) -> dict[str, object]:
    return {"model": {"w": torch.full((3,), value)}, "position": {"global_step": int(value)}}


def test_round_trip_loads_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(_state(1.0), path)
    raw = torch.load(path, weights_only=True)  # a plain torch.save file, safe to load
    assert torch.equal(raw["model"]["w"], torch.ones(3))
    assert load_checkpoint(path)["position"] == {"global_step": 1}
    assert not list(tmp_path.glob(".*tmp*")), "temporary files must not be left behind"


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_checkpoint_is_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(_state(2.0), path)
    payload = bytearray(path.read_bytes())
    if damage == "truncate":
        payload = payload[: len(payload) // 2]
    else:
        payload[len(payload) // 2] ^= 0xFF
    path.write_bytes(bytes(payload))
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(path)


def test_missing_checksum_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(_state(2.0), path)
    path.with_name("c.pt.sha256").unlink()
    with pytest.raises(CheckpointError, match="no checksum"):
        load_checkpoint(path)


def test_resume_falls_back_to_previous_good_checkpoint(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        save_step_checkpoint(_state(float(step)), tmp_path, step)
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.pt")) == ["ckpt-00000002.pt", "ckpt-00000003.pt"]
    # Damage the newest: last.pt shares its bytes (hard link), so both fail their checksum.
    newest = tmp_path / "ckpt-00000003.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    path, state, refused = load_latest_good(tmp_path)
    assert path.name == "ckpt-00000002.pt"
    assert state["position"] == {"global_step": 2}
    assert refused and all("corrupted" in line for line in refused)


def test_no_good_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        load_latest_good(tmp_path)


def test_background_writer_keeps_order_and_reports_a_failed_write(tmp_path: Path) -> None:
    from torchport.train.checkpoint import CheckpointWriter

    state = _state(1.0)
    with CheckpointWriter(tmp_path / "ok") as writer:
        writer.submit(state, 1)
        state["model"]["w"].add_(1)  # type: ignore[index]  # a later step must not leak into the written file
        writer.submit(_state(2.0), 2, best=True)
    assert torch.equal(load_checkpoint(tmp_path / "ok" / "ckpt-00000001.pt")["model"]["w"], torch.ones(3))
    assert load_checkpoint(tmp_path / "ok" / "last.pt")["position"] == {"global_step": 2}
    assert load_checkpoint(tmp_path / "ok" / "best.pt")["position"] == {"global_step": 2}

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the checkpoint folder should be")
    writer = CheckpointWriter(blocked)
    writer.submit(_state(3.0), 3)
    with pytest.raises(CheckpointError, match="writing a checkpoint"):
        writer.close()


def test_a_checksum_file_with_bad_bytes_falls_back(tmp_path: Path) -> None:
    """A `.sha256` that is not text is a damaged checkpoint like any other, not an internal error."""
    model = torch.nn.Linear(2, 2)
    for step in (1, 2):
        save_step_checkpoint({"model": model.state_dict(), "step": step}, tmp_path, step)
    (tmp_path / "last.pt.sha256").unlink()  # a hard link to ckpt-00000002.pt.sha256: damage last.pt's alone
    (tmp_path / "last.pt.sha256").write_bytes(b"\xff\xfe\x00garbage")
    path, state, refused = load_latest_good(tmp_path)
    assert path.name == "ckpt-00000002.pt" and state["step"] == 2
    assert len(refused) == 1 and "last.pt" in refused[0] and "\n" not in refused[0]
