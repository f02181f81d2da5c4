"""Files that ship with the package: the default checkpoint and the codec grids.

Their homes in the source tree are the top-level ``checkpoints/`` and ``configs/`` folders; a wheel
carries the same files as package data (``deepaq/checkpoints``, ``deepaq/configs``: see
``pyproject.toml``), so an installed ``deepaq`` scores and builds corpora without the source tree.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_CHECKPOINT_NAME = "deepaq-small-4"


def shipped_folder(name: str) -> Path:
    """``checkpoints`` or ``configs``: the package's copy (a wheel), else the source tree's."""
    package = resources.files("deepaq")
    packaged = package / name
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(str(package)).parent / name


def default_checkpoint_dir() -> Path:
    """The shipped default model folder (``checkpoints/deepaq-small-4``)."""
    return shipped_folder("checkpoints") / DEFAULT_CHECKPOINT_NAME


def codec_grid(name: str = "default_grid.yaml") -> Path:
    """A shipped codec grid (``configs/data_prep/NAME``)."""
    return shipped_folder("configs") / "data_prep" / name
