"""Backbone registry: a name in a YAML recipe -> a module that turns waveforms into hidden states.

Every backbone answers the same question ("which frame-level hidden states does this clip give?")
so that pooling, heads, losses and checkpoints are written once. A backbone is an ``nn.Module`` with

- ``sample_rate``: the rate its input must have (mono float waveforms);
- ``num_layers_out``: how many hidden states ``forward`` returns;
- ``hidden_sizes``: the width of each hidden state; ``hidden_size`` is the last one's width
  (all equal for MERT);
- ``forward(wave [B, T], lengths [B] | None) -> (list of [B, F, H_i], frame_lengths [B])``;
  frames at or past ``frame_lengths[b]`` are padding and must be ignored by the caller;
- ``frame_lengths(lengths) -> Tensor`` (frames produced by ``lengths`` samples);
- ``pretrained_path``: the local folder the weights came from, or ``None`` for a random init;
- optional hooks ``freeze_feature_encoder()``, ``enable_gradient_checkpointing()`` and
  ``lora_target()`` (the inner module that LoRA adapters are injected into).

Importing this package is cheap: torch is only imported by the builders.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

_BUILDERS: dict[str, Callable[..., Any]] = {}
_LAZY: dict[str, str] = {
    "mert": "deepaq.backbones.mert:build_mert",
    "logmel_cnn": "deepaq.backbones.logmel_cnn:build_logmel_cnn",
    "gammatone": "deepaq.backbones.gammatone:build_gammatone",
}


def register_backbone(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@register_backbone("my_net") def build(**backbone_args) -> nn.Module``."""

    def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
        _BUILDERS[name] = builder
        return builder

    return deco


def available_backbones() -> list[str]:
    return sorted(set(_BUILDERS) | set(_LAZY))


def build_backbone(name: str, **backbone_args: Any):
    """Build the backbone registered under ``name`` with ``backbone_args`` (the YAML mapping)."""
    if name not in _BUILDERS:
        if name not in _LAZY:
            raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
        import importlib

        module_name, func_name = _LAZY[name].split(":")
        _BUILDERS.setdefault(name, getattr(importlib.import_module(module_name), func_name))
    return _BUILDERS[name](**backbone_args)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_sha256(folder: str | os.PathLike) -> str:
    """Identity of a pretrained backbone folder: the sha256 of its ``model.safetensors``.

    The weights file alone decides what a checkpoint's adapters were trained on (the config is
    implied by the tensor shapes). Cached per (path, size, mtime) so a process hashes it once.
    """
    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: no model.safetensors (convert it with 'deepaq convert-mert')")
    st = weights.stat()
    key = (str(weights.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(weights)
    return _SHA_CACHE[key]


__all__ = ["available_backbones", "build_backbone", "file_sha256", "folder_sha256",
           "register_backbone"]


def wave_and_lengths(wave, lengths=None):
    """Check ``wave`` [B, T] and ``lengths`` [B] (valid samples, default all) and drop the columns no
    clip uses: the shared input contract of every backbone's ``forward``."""
    import torch

    if wave.dim() != 2:
        raise ValueError(f"expected wave [B, T], got shape {tuple(wave.shape)}")
    batch, total = wave.shape
    if lengths is None:
        return wave, torch.full((batch,), total, dtype=torch.long, device=wave.device)
    lengths = lengths.to(device=wave.device, dtype=torch.long)
    if lengths.shape != (batch,) or bool((lengths < 1).any()) or bool((lengths > total).any()):
        raise ValueError(f"lengths must be [B] in 1..{total}, got {lengths.tolist()}")
    return wave[:, :int(lengths.max())], lengths
