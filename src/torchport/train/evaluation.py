"""Metrics over whole splits: validation every epoch, and the test split once, with the checkpoint export uses.

The test split (``data.split.test``) is never seen during training or model selection; it is evaluated once at
the end with the very weights the bundle will ship (``export.checkpoint``: best or last), so the ``test_*``
numbers in summary.json, the manifest and the report describe the exported model.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchport.data import Split
from torchport.train import distributed
from torchport.train.distributed import World
from torchport.train.resume import load_trained_model
from torchport.train.tasks import TaskAdapter


def evaluate(
    model: nn.Module,
    split: Split,
    task: TaskAdapter,
    batch_size: int,
    device: torch.device,
    world: World | None = None,
) -> dict[str, float]:
    """Loss and the task's metric over a whole split, in eval mode.

    Under DDP each rank runs every world_size-th sample and the outputs are gathered, so every rank computes
    the metric over the same whole split and reports the same number. ``model`` is the plain module, never
    the DDP wrapper: its forward would start collectives that ranks with fewer batches never join.
    """
    world = world or World()
    if len(split.x) == 0:
        return {}
    mine_only = np.asarray(distributed.shard(len(split.x), world), dtype=np.int64)
    targets = split.y[mine_only]
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(mine_only), batch_size):
            # Read per batch: a split read on demand (image files, a large table) never sits in memory whole.
            batch = torch.as_tensor(split.x[mine_only[start : start + batch_size]]).to(device)
            outputs.append(model(batch).float().cpu())
    model.train()
    mine = (torch.cat(outputs) if outputs else torch.empty(0), torch.as_tensor(targets))
    gathered = [part for part in distributed.all_gather_objects(mine, world) if len(part[1])]
    return task.metrics(torch.cat([o for o, _ in gathered]), torch.cat([t for _, t in gathered]))


def prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}_{name}": value for name, value in metrics.items()}


def evaluate_test_split(
    model: nn.Module, checkpoint: Path, test: Split, task: TaskAdapter, batch_size: int, device: torch.device
) -> dict[str, float]:
    """``test_*`` metrics of the weights in ``checkpoint`` (loaded into a copy of ``model``, which is left as it
    is); {} when there is no test split. One process: rank 0 calls this after training, on the whole split."""
    if len(test.x) == 0:
        return {}
    _, weights = load_trained_model(checkpoint)
    exported = copy.deepcopy(model)
    exported.load_state_dict(weights)
    return prefixed(evaluate(exported, test, task, batch_size, device), "test")
