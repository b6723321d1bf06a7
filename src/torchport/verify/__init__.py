"""Numerical parity of exported artifacts against the PyTorch reference, and where they diverge."""
