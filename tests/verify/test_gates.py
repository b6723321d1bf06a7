"""Accuracy gates: the arithmetic of the drop (or rise) allowed, and the one line that explains a refusal."""

from __future__ import annotations

import pytest

from torchport.verify.gates import accuracy_gate, describe_gate


def test_gate_arithmetic_and_its_line() -> None:
    gate = accuracy_gate("classification", 0.912, 0.962, 0.01)
    assert not gate.passed and gate.change == pytest.approx(0.05)
    assert describe_gate(gate) == "val_accuracy 0.9120 is 0.0500 below fp32 0.9620 (max drop 0.01)"
    regression = accuracy_gate("regression", 1.05, 1.0, 0.01)  # RMSE 5 % worse
    assert not regression.passed and regression.change == pytest.approx(0.05)
    assert describe_gate(regression) == "val_rmse 1.05 is 5.00% above fp32 1 (max rise 1%)"
    assert accuracy_gate("regression", 1.005, 1.0, 0.01).passed
    assert accuracy_gate("classification", 0.96, 0.962, 0.01).passed
