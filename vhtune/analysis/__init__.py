"""Recordings → pandas frames and derived metrics (per thread, per data path, per tap)."""

from vhtune.analysis.recording import Recording, load

__all__ = ["Recording", "load"]
