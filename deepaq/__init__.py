"""deepaq: learned perceptual audio-quality metrics from weak labels (DeePAQ).

The heavy parts (torch, the model) load only when used: ``from deepaq import Scorer``.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Scorer", "__version__"]


def __getattr__(name: str):
    if name == "Scorer":
        from deepaq.scoring import Scorer

        return Scorer
    raise AttributeError(f"module 'deepaq' has no attribute {name!r}")
