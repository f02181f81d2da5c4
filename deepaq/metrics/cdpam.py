"""CDPAM (Manocha et al. 2021, PyPI ``cdpam``): a learned full-reference distance as a registry metric.

Why: the learned baseline users cite next to ViSQOL; its weights ship inside its wheel, so it needs no
download. Only two files of the installed package are used: ``cdpam/models.py`` (the torch-only
``FINnet`` class, loaded by file path so that ``cdpam/__init__.py`` and its librosa/resampy imports are
never run) and ``CDPAM_trained/scratchJNDdefault_best_model.pth``, loaded once per process.

Security: loading that ``.pth`` **unpickles the file**. ``torch.load(..., weights_only=True)`` cannot
read it (a legacy, Python-2-era torch file whose optimiser state uses the ``INT`` pickle opcode that
torch's safe unpickler rejects), so it is read with ``weights_only=False`` through a restricted
unpickler that only resolves the four globals such a checkpoint needs (tensor rebuild, float and long
storages, ``OrderedDict``) and refuses anything else.

As upstream's ``cdpam.load_audio`` does: mono, 22.05 kHz, samples scaled to the 16-bit integer range.
Lower is better; identical input gives 0. Install: ``pip install 'deepaq[baselines]'``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import types
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from deepaq.metrics import Metric, MetricInfo

SAMPLE_RATE = 22050
INSTALL_HINT = "pip install 'deepaq[baselines]'"
WEIGHTS = "CDPAM_trained/scratchJNDdefault_best_model.pth"
# upstream cdpam.CDPAM's constructor arguments for these weights
FINNET_ARGS = {"encoder_layers": 16, "encoder_filters": 64, "ndim": [16, 6], "classif_dp": 0.05,
               "classif_BN": 0, "classif_act": "no", "input_size": 512}
_ALLOWED_GLOBALS = {("torch._utils", "_rebuild_tensor_v2"), ("torch", "FloatStorage"),
                    ("torch", "LongStorage"), ("collections", "OrderedDict")}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"CDPAM weights: refusing to load {module}.{name}")
        return super().find_class(module, name)


_RESTRICTED_PICKLE = types.SimpleNamespace(
    __name__="deepaq_restricted_pickle", Unpickler=_RestrictedUnpickler,
    load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load())


def package_dir() -> Path:
    """The installed ``cdpam`` package's folder (found without importing it)."""
    spec = importlib.util.find_spec("cdpam")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"metric 'cdpam' needs the cdpam package: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def load_model() -> Any:
    """``FINnet`` with the wheel's weights, in eval mode on the CPU (once per process)."""
    import torch

    root = package_dir()
    spec = importlib.util.spec_from_file_location("_deepaq_cdpam_models", root / "models.py")
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    checkpoint = torch.load(root / WEIGHTS, map_location="cpu", weights_only=False,
                            pickle_module=_RESTRICTED_PICKLE)
    model = models.FINnet(**FINNET_ARGS)
    model.load_state_dict(checkpoint["state"])
    return model.eval()


def _prepare(x: np.ndarray, sr: int) -> np.ndarray:
    from deepaq.audio import apply_channel_policy, resample

    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    mono = resample(apply_channel_policy(x, "mono"), sr, SAMPLE_RATE)[0]
    return np.round(mono * 32768.0).astype(np.float32)


class CdpamMetric(Metric):
    """Registry entry ``cdpam``."""

    info = MetricInfo(name="cdpam", needs_reference=True, higher_is_better=False,
                      sample_rate=SAMPLE_RATE, extra="baselines",
                      description="CDPAM learned distance (22.05 kHz mono; lower is better)")

    def __init__(self):
        self.model = load_model()
        self._last_ref: tuple[bytes, Any] | None = None  # (digest, embedding) of the last reference

    def _embed(self, x: np.ndarray) -> Any:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            _, acoustics, _ = self.model.base_encoder(torch.from_numpy(x)[None, None, :])
            return F.normalize(acoustics, dim=1)

    def score(self, ref: np.ndarray | None, deg: np.ndarray, sr: int) -> float:
        import torch

        if ref is None:
            raise ValueError("cdpam needs a reference")
        a, b = _prepare(ref, sr), _prepare(deg, sr)
        n = min(a.size, b.size)
        # the encoder is the cost; a reference scored against many degraded versions runs once
        digest = hashlib.blake2b(a[:n].tobytes(), digest_size=16).digest()
        if self._last_ref is None or self._last_ref[0] != digest:
            self._last_ref = (digest, self._embed(a[:n]))
        with torch.inference_mode():
            distance = self.model.model_dist(self._last_ref[1], self._embed(b[:n]))
        return float(distance.reshape(-1)[0])
