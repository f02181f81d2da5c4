"""Shared fixtures: the real music references in ../shared and short excerpts of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_AUDIO = REPO.parent / "shared" / "data" / "visqol_conformance" / "audio"


@pytest.fixture(scope="session")
def shared_audio_dir() -> Path:
    if not SHARED_AUDIO.is_dir():
        pytest.skip(f"shared music not found at {SHARED_AUDIO}")
    return SHARED_AUDIO


@pytest.fixture(scope="session")
def music_clip(shared_audio_dir):
    """``music_clip(name="guitar", seconds=2.0, offset=1.0) -> (2, N) float32 at 48 kHz``."""
    import soundfile as sf

    cache: dict = {}

    def clip(name: str = "guitar", seconds: float = 2.0, offset: float = 1.0) -> np.ndarray:
        if name not in cache:
            data, sr = sf.read(str(shared_audio_dir / f"{name}48_stereo.wav"), dtype="float32",
                               always_2d=True)
            assert sr == 48000
            cache[name] = data.T.copy()
        x = cache[name]
        a = int(offset * 48000)
        return x[:, a:a + int(seconds * 48000)].copy()

    return clip
