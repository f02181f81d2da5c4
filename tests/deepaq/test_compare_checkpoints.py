"""The ``compare`` checkpoints: ``deepaq-small-4`` (the shipped default, trained on a
``deepaq-prep build`` families corpus) and ``deepaq-small-3`` (its predecessor, trained on
stand-in ladders; an ablation row). Pinned scores of three real coded pairs, the sanity suite's
invariances on a shared reference, and ladders of families on a real recording. Bump the
version in the model card and here when the pins change on purpose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.deepaq.test_small2_checkpoint import assert_pinned

ROOT = Path(__file__).resolve().parents[2] / "checkpoints"
# version -> (folder, {conformance case: (distance, lag)}), as for deepaq-small-2 in
# test_small2_checkpoint.py
CHECKPOINTS = {
    "deepaq-small-4": (ROOT / "deepaq-small-4", {
        "ravel_128kbps_opus": (0.023749515414237976, 0),
        "harpsichord_96kbps_mp3": (0.06418323516845703, 1105),
        "contrabassoon_24kbps_aac": (0.12473511695861816, 4302),
    }),
    "deepaq-small-3": (ROOT / "deepaq-small-3", {
        "ravel_128kbps_opus": (0.01856929622590542, 0),
        "harpsichord_96kbps_mp3": (0.0600489042699337, 1105),
        "contrabassoon_24kbps_aac": (0.09750968962907791, 4302),
    }),
}
DEFAULT_VERSION = "deepaq-small-4"


@pytest.fixture(scope="module", params=list(CHECKPOINTS))
def version(request):
    return request.param


@pytest.fixture(scope="module")
def scorer(version):
    from deepaq import Scorer

    return Scorer.from_pretrained(CHECKPOINTS[version][0], device="cpu")


def test_the_default_ships():
    from deepaq.scoring import DEFAULT_CHECKPOINT, default_checkpoint_path

    assert DEFAULT_CHECKPOINT.resolve() == CHECKPOINTS[DEFAULT_VERSION][0].resolve()
    assert (DEFAULT_CHECKPOINT / "config.yaml").is_file(), "the default checkpoint must ship"
    assert "DEEPAQ_CHECKPOINT" in default_checkpoint_path.__doc__


def test_checkpoint_is_small_documented_and_needs_no_download(version):
    import yaml

    folder = CHECKPOINTS[version][0]
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert size <= 50 * 2**20
    assert version in (folder / "README.md").read_text()
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    assert cfg["model"]["distance"] == "compare" and cfg["model"]["backbone"] == "gammatone"


def test_pinned_scores(scorer, version, shared_audio_dir):
    assert_pinned(scorer, shared_audio_dir, CHECKPOINTS[version][1])


def test_invariances_leave_the_calibrated_mos_within_0_1(scorer, music_clip):
    """Gain within +-10 dB, polarity, a resampling round trip and a 10 ms delay are (near)
    transparent: each moves the calibrated MOS by at most 0.1 on a real recording."""
    from deepaq.audio import resample

    ref = music_clip("moonlight", seconds=4.0, offset=1.0)
    clean = scorer.score(ref, ref, sample_rate=48000).mos
    lag = 480
    versions = {f"gain {g:+g} dB": ref * 10 ** (g / 20) for g in (-10, -6, 6)}
    versions["polarity"] = -ref
    versions["resample 44.1 kHz"] = resample(resample(ref, 48000, 44100), 44100, 48000)
    versions["delay 10 ms"] = np.concatenate([np.zeros((2, lag), np.float32), ref[:, :-lag]], 1)
    for name, deg in versions.items():
        got = scorer.score(ref, deg[:, :ref.shape[1]], sample_rate=48000).mos
        assert abs(got - clean) <= 0.1, (name, got, clean)


def test_orders_noise_by_snr_and_mp3_by_bitrate_on_a_real_recording(scorer, music_clip):
    """Two of the trained ladders, on a real recording the training never saw."""
    from data_prep.codecs import code_excerpt, load_grid
    from data_prep.degradations import get_degradation

    ref = music_clip("sopr", seconds=4.0, offset=1.0)
    rng = np.random.default_rng(0)
    noise = [scorer.score(ref, get_degradation("noise_pink")(ref, 48000, snr, rng),
                          sample_rate=48000).distance for snr in (40, 25, 10)]
    assert noise == sorted(noise) and len(set(noise)) == 3, noise
    grid = {s.bitrate_kbps: s for s in load_grid(Path(__file__).resolve().parents[2] / "configs"
                                                   / "data_prep" / "default_grid.yaml")
            if s.codec == "mp3"}
    coded = [scorer.score(ref, code_excerpt(ref, grid[k]).audio, sample_rate=48000).distance
             for k in (128, 64, 32)]
    assert coded == sorted(coded), coded
