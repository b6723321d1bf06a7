"""Verification: numerical parity of a bundle's artifacts against the PyTorch reference (``bundle``, on the
primitives in ``parity``), where they diverge (``localize``), the accuracy gates of reduced-precision variants
(``gates``), and the build-verify-gate loop that decides which variants a bundle keeps (``variants``)."""
