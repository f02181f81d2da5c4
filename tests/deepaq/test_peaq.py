"""PEAQ Basic on real music: identical pairs, noise and coding sweeps, MOV ranges, conformance."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest

from deepaq.metrics.peaq import (
    MOV_NAMES,
    MOV_RANGES,
    PEAQMetric,
    di_to_odg,
    movs_to_di,
    peaq_basic,
)

DISTURBANCE_MOVS = ("WinModDiff1B", "ADBB", "EHSB", "AvgModDiff1B", "AvgModDiff2B",
                    "RmsNoiseLoudB", "MFPDB", "RelDistFramesB")


def _noisy(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    return x + noise * np.sqrt(np.mean(x ** 2)) * 10 ** (-snr_db / 20)


def _mp3(code, x: np.ndarray, kbps: int) -> np.ndarray:
    """MP3 round trip through the corpus codec stage (``mp3_code`` fixture), alignment re-checked."""
    y = code(x, kbps)
    # check the alignment instead of trusting it: PEAQ needs time-aligned signals
    lags = range(-600, 601)
    ref, deg = x.mean(0)[2000:-2000], y.mean(0)
    best = max(lags, key=lambda lag: float(ref @ deg[2000 + lag:2000 + lag + ref.size]))
    assert best == 0, f"decoded MP3 is shifted by {best} samples"
    return y


@pytest.fixture(scope="module")
def clip(music_clip) -> np.ndarray:
    return music_clip("guitar", seconds=3.0, offset=1.0)


def test_identical_pair_gives_the_networks_top_grade(clip):
    out = PEAQMetric().score(clip, clip.copy(), 48000)
    assert out["score"] == out["odg"]
    # every disturbance MOV is exactly zero and the NMR is far below the masked threshold ...
    for name in DISTURBANCE_MOVS:
        assert out[name] == 0.0, name
    assert out["TotalNMRB"] < -60
    assert out["BandwidthRefB"] == out["BandwidthTestB"] > 346
    # ... so the ODG sits just under the network's ceiling bmax = 0.22 (imperceptible)
    assert 0.1 < out["odg"] <= 0.22
    assert out["odg"] == pytest.approx(di_to_odg(out["di"]))


def test_odg_falls_monotonically_with_noise_level(clip):
    snrs = [70, 50, 40, 30, 20, 10]
    odgs = [peaq_basic(clip, _noisy(clip, snr), 48000)["odg"] for snr in snrs]
    # falls at every step until it reaches the scale's floor (-3.91, "very annoying"), where
    # the network saturates and neighbouring levels may differ by a few hundredths either way
    floor = -3.7
    assert all(a > b or (max(a, b) < floor and abs(a - b) < 0.05)
               for a, b in itertools.pairwise(odgs)), dict(zip(snrs, odgs))
    assert odgs[0] > -0.5 and odgs[-1] < -3.0, dict(zip(snrs, odgs))


def test_odg_falls_with_lower_mp3_bitrate(clip, mp3_code):
    results = {k: peaq_basic(clip, _mp3(mp3_code, clip, k), 48000) for k in (192, 128, 64, 32)}
    odgs = [results[k]["odg"] for k in (192, 128, 64, 32)]
    assert all(a > b for a, b in itertools.pairwise(odgs)), odgs
    # the coder's low-pass shows up in the test bandwidth, not in the reference's
    bw = [results[k]["BandwidthTestB"] for k in (192, 128, 64, 32)]
    assert all(a > b for a, b in itertools.pairwise(bw)), bw
    ref_bw = [results[k]["BandwidthRefB"] for k in results]
    assert max(ref_bw) - min(ref_bw) < 5


def test_movs_stay_in_documented_ranges(clip, mp3_code):
    for deg in (_noisy(clip, 40), _noisy(clip, 10), _mp3(mp3_code, clip, 64)):
        out = peaq_basic(clip, deg, 48000)
        assert set(MOV_NAMES) <= set(out)
        for name in MOV_NAMES:
            lo, hi = MOV_RANGES[name]
            assert lo <= out[name] <= hi, (name, out[name])
        assert -3.98 <= out["odg"] <= 0.22
        assert out["di"] == pytest.approx(movs_to_di(out))


def test_other_sample_rates_and_mono_are_handled(clip, mp3_code):
    from deepaq.audio import resample

    def at44(x: np.ndarray) -> np.ndarray:
        return resample(x, 48000, 44100)

    ref44 = at44(clip)
    odgs = [peaq_basic(ref44, at44(deg), 44100)["odg"]
            for deg in (clip, _mp3(mp3_code, clip, 128), _mp3(mp3_code, clip, 32))]
    assert odgs[0] > odgs[1] > odgs[2], odgs
    assert odgs[0] == pytest.approx(peaq_basic(clip, clip, 48000)["odg"], abs=0.05)
    mono = clip.mean(0)
    assert peaq_basic(mono, mono, 48000)["RmsNoiseLoudB"] == 0.0


def test_channel_mismatch_is_an_audio_error(clip):
    from deepaq.audio import AudioError

    with pytest.raises(AudioError, match="channel"):
        peaq_basic(clip, clip[:1], 48000)


# --- conformance with the standard's test items (BS.1387-1, Basic version, Table 22) ---------
# Published DI of the 16 items: <item>.wav is the coded signal, the reference replaces "cod" by
# "ref" (e.g. acodsna.wav / arefsna.wav). The items are not redistributable, so the test runs only
# when DEEPAQ_PEAQ_CONFORMANCE_DIR points at a folder holding them.
PUBLISHED_DI = {
    "acodsna": 1.304, "bcodtri": 1.949, "ccodsax": 0.048, "ecodsmg": 1.731, "fcodsb1": 0.677,
    "fcodtr1": 1.419, "fcodtr2": -0.045, "fcodtr3": -0.715, "gcodcla": 1.781, "icodsna": -3.029,
    "kcodsme": 3.093, "lcodhrp": 1.041, "lcodpip": 1.973, "mcodcla": -0.436, "ncodsfe": 3.135,
    "scodclv": 1.689,
}


def _find(folder: Path, stem: str) -> Path | None:
    for p in folder.iterdir():
        if p.stem.lower() == stem and p.suffix.lower() == ".wav":
            return p
    return None


def test_conformance_items():
    folder = os.environ.get("DEEPAQ_PEAQ_CONFORMANCE_DIR")
    if not folder:
        pytest.skip("DEEPAQ_PEAQ_CONFORMANCE_DIR not set (BS.1387 conformance items)")
    folder_path = Path(folder)
    if not folder_path.is_dir():
        pytest.skip(f"DEEPAQ_PEAQ_CONFORMANCE_DIR={folder} is not a folder")
    from deepaq.audio import read_audio

    diffs = {}
    for item, published in PUBLISHED_DI.items():
        cod, ref = _find(folder_path, item), _find(folder_path, item.replace("cod", "ref"))
        if cod is None or ref is None:
            continue
        x, sr_x = read_audio(ref)
        y, sr_y = read_audio(cod)
        assert sr_x == sr_y == 48000, item
        diffs[item] = peaq_basic(x, y, 48000)["di"] - published
    if not diffs:
        pytest.skip(f"no conformance item pairs (e.g. acodsna.wav + arefsna.wav) in {folder}")
    print({k: round(v, 3) for k, v in diffs.items()})
    # The standard asks |dDI| <= 0.02; no public implementation meets that (GstPEAQ, PQevalAudio
    # reach |dDI| of 0.03-0.7 on these items), so the default bound is theirs. Set
    # DEEPAQ_PEAQ_DI_TOLERANCE=0.02 to test the standard's own bound.
    tol = float(os.environ.get("DEEPAQ_PEAQ_DI_TOLERANCE", "0.75"))
    worst = max(diffs, key=lambda k: abs(diffs[k]))
    assert abs(diffs[worst]) <= tol, (worst, diffs)
    assert np.mean(np.abs(list(diffs.values()))) <= max(tol / 3, 0.02), diffs


def test_vectorised_spreading_matches_the_loop_of_the_standard():
    """Oracle: the per-band loop of BS.1387-1 section 2.1.7 (Kabal's reading), slow but plain."""
    from deepaq.metrics import peaq as P

    t = P._tables()

    def spread_loop(e: np.ndarray, bs: np.ndarray) -> np.ndarray:
        nc, a_l = e.size, 10 ** (-2.7 * P.DZ)
        acc = np.zeros(nc)
        for m in range(nc):
            a_u = 10 ** ((-2.4 - 23 / t.fc[m]) * P.DZ) * e[m] ** (0.2 * P.DZ)
            norm = (1 - a_l ** (m + 1)) / (1 - a_l) + (1 - a_u ** (nc - m)) / (1 - a_u) - 1
            en = (e[m] / norm) ** 0.4
            for i in range(nc):
                acc[i] += en * (a_l ** (0.4 * (m - i)) if i <= m else a_u ** (0.4 * (i - m)))
        return acc ** 2.5 / bs

    bs = spread_loop(np.ones(t.fc.size), np.ones(t.fc.size))
    np.testing.assert_allclose(t.bs, bs, rtol=1e-12)
    e = 10 ** np.random.default_rng(0).uniform(0, 9, size=(2, t.fc.size)) + t.ein
    np.testing.assert_allclose(P._spread(e, t), np.stack([spread_loop(r, bs) for r in e]),
                               rtol=1e-10)
