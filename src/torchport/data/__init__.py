"""The data that the ``data:`` section of a config names, split and described for the model.

``load_data(cfg.data, cfg.seed)`` is the whole interface: sources, task inference and splitting stay inside.
"""

from torchport.data.splits import DataSplits, Split, load_data

__all__ = ["DataSplits", "Split", "load_data"]
