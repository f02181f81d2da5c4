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


@pytest.fixture(scope="session")
def mp3_code():
    """``mp3_code(x, kbps) -> x`` coded with MP3 and back through the corpus pipeline's own codec
    stage (``data_prep.codecs.code_excerpt``): delay-compensated, aligned, same length."""
    from data_prep.codecs import CodecSpec, code_excerpt

    def code(x: np.ndarray, kbps: int) -> np.ndarray:
        return code_excerpt(x, CodecSpec("mp3", kbps, "libmp3lame", "mp3")).audio

    return code
