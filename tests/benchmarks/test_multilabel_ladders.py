"""The in-memory ladders of benchmarks/multilabel_ladders.py (not a package: loaded by path)."""

import importlib.util
from pathlib import Path

import numpy as np

LADDERS_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "multilabel_ladders.py"


def _ladders():
    spec = importlib.util.spec_from_file_location("multilabel_ladders", LADDERS_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resampling_families_keep_the_reference_length(music_clip):
    """soxr's round trip can come back a few samples short; the item must still match its
    reference sample for sample (the comparison features are computed frame by frame)."""
    ladders = _ladders()
    clip = music_clip(seconds=2.0)
    rng = np.random.default_rng(0)
    families = {"resample_bandlimit": ladders.LADDERS["resample_bandlimit"][0],
                "resample_roundtrip": ladders.INVARIANCES["resample_roundtrip"]}
    for extra in range(1, 8):  # lengths that are not whole multiples of the lower rates
        audio = clip[:, :clip.shape[1] - extra]
        for family, levels in families.items():
            for level in levels:
                out = ladders.degrade(family, level, audio, None, rng)
                assert out.shape == audio.shape, (family, level, audio.shape, out.shape)
                assert out.dtype == np.float32
