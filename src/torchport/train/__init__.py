"""Training: the single-process loop, checkpoints, optimizers."""
