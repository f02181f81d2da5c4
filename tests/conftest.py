"""Shared fixtures: real music that ships with the repository, and the ViSQOL conformance data.

Music comes from ``tests/fixtures/music/`` and ``deepaq/examples/`` (public-domain scores rendered
by the project, see ``tests/fixtures/README.md``), so the suite tests the same behaviour on any
machine. Only the ViSQOL conformance cases (upstream's recordings and official scores) live outside
the repository: ``$DEEPAQ_SHARED_DIR/data/visqol_conformance`` (default ``../shared``). Without
them those tests skip, and fail when ``$CI`` is set, so CI cannot go green without running them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE_MUSIC = REPO / "tests" / "fixtures" / "music"
EXAMPLES = REPO / "deepaq" / "examples"
SAMPLE_RATE = 48000

#: Fixture name -> file (48 kHz stereo FLAC, 4 s; ``brass`` 10 s).
MUSIC: dict[str, Path] = {
    "guitar": FIXTURE_MUSIC / "guitar.flac",            # Joplin, nylon guitar + acoustic bass
    "mallets": FIXTURE_MUSIC / "mallets.flac",          # Mozart K.155, vibraphone/marimba/xylophone
    "pizzicato": FIXTURE_MUSIC / "pizzicato.flac",      # Haydn op. 1/1, pizzicato strings
    "harpsichord": FIXTURE_MUSIC / "harpsichord.flac",  # Bach BWV 1.6
    "choir": FIXTURE_MUSIC / "choir.flac",              # Palestrina, choir aahs
    "brass": FIXTURE_MUSIC / "brass.flac",              # Bach BWV 10.7, brass quartet, 10 s
    "piano": EXAMPLES / "mozart_k545_piano.flac",
    "strings": EXAMPLES / "bach_bwv66.6_strings.flac",
}

#: Names of the TCDAudio14 recordings the tests were first written against -> the fixture of the
#: closest character (transients, bells, voice, low brass...), so those tests read as before.
ALIASES: dict[str, str] = {
    "castanets": "pizzicato", "glock": "mallets", "moonlight": "piano", "sopr": "choir",
    "strauss": "brass", "contrabassoon": "brass", "ravel": "strings", "steely": "strings",
}


def shared_dir() -> Path:
    """``$DEEPAQ_SHARED_DIR``, else ``../shared`` beside the repository."""
    return Path(os.environ.get("DEEPAQ_SHARED_DIR") or REPO.parent / "shared")


def conformance_dir() -> Path:
    return shared_dir() / "data" / "visqol_conformance"


def conformance_cases() -> list[dict]:
    """The official ViSQOL cases, or [] when the data is missing."""
    path = conformance_dir() / "cases.json"
    return json.loads(path.read_text())["cases"] if path.is_file() else []


def _missing_conformance() -> None:
    message = (f"ViSQOL conformance data not found at {conformance_dir()} "
               "(set DEEPAQ_SHARED_DIR to the folder holding data/visqol_conformance)")
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must run the conformance tests", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def visqol_conformance_dir() -> Path:
    """The folder holding ``cases.json`` and ``audio/``: skip without it, fail under ``$CI``."""
    if not (conformance_dir() / "cases.json").is_file():
        _missing_conformance()
    return conformance_dir()


@pytest.fixture(scope="session")
def shared_audio_dir(visqol_conformance_dir) -> Path:
    """The conformance recordings (``*48_stereo*.wav``): for ViSQOL conformance tests only."""
    return visqol_conformance_dir / "audio"


def pytest_generate_tests(metafunc):
    """``visqol_conformance_case``: one test per official case (one failing/skipping test when the
    data is missing, so an absent folder is never an empty, silently passing parametrisation)."""
    if "visqol_conformance_case" in metafunc.fixturenames:
        cases = conformance_cases()
        metafunc.parametrize("visqol_conformance_case", cases or [None], indirect=True,
                             ids=[c["name"] for c in cases] or ["missing"])


@pytest.fixture
def visqol_conformance_case(request) -> dict:
    if request.param is None:
        _missing_conformance()
    return request.param


def music_path(name: str) -> Path:
    """The FLAC file of fixture ``name`` (or of an old recording name, see :data:`ALIASES`)."""
    name = ALIASES.get(name, name)
    if name not in MUSIC:
        raise KeyError(f"no test music named {name!r}; choose from {sorted(MUSIC)}")
    return MUSIC[name]


@pytest.fixture(scope="session")
def music_file():
    """``music_file(name="guitar") -> Path`` of a real-music FLAC (48 kHz stereo)."""

    def path(name: str = "guitar") -> Path:
        return music_path(name)

    return path


@pytest.fixture(scope="session")
def music_clip():
    """``music_clip(name="guitar", seconds=2.0, offset=1.0) -> (2, N) float32 at 48 kHz``.

    The offset moves earlier when the fixture is too short for ``offset + seconds`` (the files
    are 4 s; ``brass`` is 10 s), so every request gets exactly ``seconds`` of music.
    """
    import soundfile as sf

    cache: dict[Path, np.ndarray] = {}

    def clip(name: str = "guitar", seconds: float = 2.0, offset: float = 1.0) -> np.ndarray:
        path = music_path(name)
        if path not in cache:
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
            assert sr == SAMPLE_RATE and data.shape[1] == 2, (path, sr, data.shape)
            cache[path] = data.T.copy()
        x = cache[path]
        n = int(seconds * SAMPLE_RATE)
        if n > x.shape[1]:
            raise ValueError(f"{path.name} holds {x.shape[1] / SAMPLE_RATE:.1f} s, "
                             f"{seconds} s were asked for")
        a = min(int(offset * SAMPLE_RATE), x.shape[1] - n)
        return x[:, a:a + n].copy()

    return clip


@pytest.fixture(scope="session")
def mp3_code():
    """``mp3_code(x, kbps) -> x`` coded with MP3 and back through the corpus pipeline's own codec
    stage (``data_prep.codecs.code_excerpt``): delay-compensated, aligned, same length."""
    from data_prep.codecs import CodecSpec, code_excerpt

    def code(x: np.ndarray, kbps: int) -> np.ndarray:
        return code_excerpt(x, CodecSpec("mp3", kbps, "libmp3lame", "mp3")).audio

    return code
