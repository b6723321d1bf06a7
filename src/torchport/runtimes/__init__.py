"""Runners that execute a bundle outside PyTorch, and the conformance check that compares them.

Every runner is a small standalone program (Python, Node.js, a web page, C++) that reads only ``manifest.json``
and the files it names, runs the golden inputs, and writes ``result.json`` plus raw little-endian outputs into
the folder named on its command line. ``conformance.py`` runs them and compares with the golden outputs.
"""

from __future__ import annotations

from torchport.runtimes.base import Runtime, RuntimeMissing

__all__ = ["Runtime", "RuntimeMissing"]
