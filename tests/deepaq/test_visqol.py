"""The weak labeller must *be* ViSQOL v3 audio mode: upstream conformance values, sane ordering on
real music, and clear errors on unusable input."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from deepaq.audio import AudioError

#: Upstream's own tolerance (google/visqol tests/conformance_test.cc).
TOLERANCE = 1e-4
#: visqol-python 3.8.0 reproduces this one case only to |delta| = 1.17e-4: its own published
#: conformance table (package README, "Conformance Test Results") lists 2.3469 expected vs 2.3468
#: (delta 0.000117), a residual of the port's numerics on this low-level, bass-heavy 24 kbps pair
#: that upstream's 1e-4 just misses. 2e-4 keeps the check meaningful: every other case matches to
#: < 1e-12 and any real regression moves scores by far more.
LOOSER = {"contrabassoon_24kbps_aac": 2e-4}


@pytest.fixture(scope="module")
def labeller():
    from deepaq.visqol import VisqolLabeller

    lab = VisqolLabeller(mode="audio")
    lab.warmup()
    return lab


@pytest.fixture(scope="module", params=["visqol-python", "batched"])
def any_labeller(request, labeller):
    """Both corpus labellers: visqol-python as wrapped, and the batched one (visqol_batched)."""
    if request.param == "visqol-python":
        return labeller
    from deepaq.visqol import make_labeller

    lab = make_labeller(request.param)
    lab.warmup()
    return lab


def test_conformance_with_upstream_visqol(any_labeller, visqol_conformance_dir,
                                          visqol_conformance_case):
    """Full-length pairs, as upstream runs them, scored from the files, by both labellers."""
    case, folder = visqol_conformance_case, visqol_conformance_dir
    got = any_labeller.score_files(folder / case["reference"], folder / case["degraded"])
    tol = LOOSER.get(case["name"], TOLERANCE)
    assert abs(got - case["moslqo"]) <= tol, (case["name"], got, case["moslqo"])


def test_conformance_cases_are_all_present(visqol_conformance_dir):
    cases = json.loads((visqol_conformance_dir / "cases.json").read_text())["cases"]
    assert len(cases) >= 10
    assert set(LOOSER) <= {c["name"] for c in cases}


@pytest.mark.parametrize("name", ["guitar", "harpsichord"])
def test_labels_fall_as_mp3_bitrate_falls(labeller, music_clip, name, mp3_code):
    # MP3 at 48 kHz has no bitrate below 32 kbps (LAME clamps 16 -> 32), so stop at 32.
    ref = music_clip(name, seconds=3.0, offset=1.0)
    scores = [labeller.score(ref, mp3_code(ref, kbps)) for kbps in (128, 64, 32)]
    assert scores[0] > scores[1] > scores[2], scores
    assert labeller.score(ref, ref) > scores[0]
    assert all(1.0 <= s <= 5.0 for s in scores)


def test_labels_fall_as_bandwidth_falls(labeller, music_clip):
    from scipy.signal import butter, sosfiltfilt

    ref = music_clip("moonlight", seconds=3.0, offset=2.0)
    scores = []
    for cutoff in (12000, 6000, 3000, 1500):
        sos = butter(8, cutoff, fs=48000, output="sos")
        scores.append(labeller.score(ref, sosfiltfilt(sos, ref, axis=1).astype(np.float32)))
    assert all(a > b for a, b in itertools.pairwise(scores)), scores


def test_channels_are_averaged_and_files_match_arrays(labeller, music_clip, tmp_path, mp3_code):
    from deepaq.audio import write_audio

    ref = music_clip("glock", seconds=2.0)
    deg = mp3_code(ref, 64)
    stereo = labeller.score(ref, deg)
    mono = labeller.score(ref.mean(axis=0, keepdims=True), deg.mean(axis=0, keepdims=True))
    # the labeller downmixes in float64, a mono input arrives rounded to float32
    assert stereo == pytest.approx(mono, abs=1e-6)
    # swapping channels leaves the mono downmix, hence the score, unchanged
    assert labeller.score(ref[::-1], deg[::-1]) == pytest.approx(stereo, abs=1e-9)
    write_audio(tmp_path / "r.wav", ref, 48000)
    write_audio(tmp_path / "d.wav", deg, 48000)
    assert labeller.score_files(tmp_path / "r.wav", tmp_path / "d.wav") == pytest.approx(
        stereo, abs=1e-9)


def test_other_rates_are_resampled_or_refused(labeller, music_clip, mp3_code):
    from deepaq.audio import resample
    from deepaq.visqol import VisqolLabeller

    ref = music_clip("sopr", seconds=2.0)
    deg = mp3_code(ref, 32)
    at48 = labeller.score(ref, deg)
    at44 = labeller.score(resample(ref, 48000, 44100), resample(deg, 48000, 44100), 44100)
    assert abs(at44 - at48) < 0.1, (at44, at48)
    strict = VisqolLabeller(mode="audio", resample=False)
    with pytest.raises(AudioError, match="44100 Hz"):
        strict.score(ref[:, :44100], deg[:, :44100], 44100)


def test_silent_and_nan_inputs_raise_audio_error(labeller, music_clip):
    ref = music_clip("guitar", seconds=1.0)
    silent = np.zeros_like(ref)
    with pytest.raises(AudioError, match="silent"):
        labeller.score(ref, silent)
    with pytest.raises(AudioError, match="silent"):
        labeller.score(silent, ref)
    bad = ref.copy()
    bad[0, 100] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        labeller.score(ref, bad)
    with pytest.raises(AudioError, match="zero-length"):
        labeller.score(ref, ref[:, :0])


def test_speech_mode_runs_at_16k(music_clip, mp3_code):
    from deepaq.visqol import VisqolLabeller

    speech = VisqolLabeller(mode="speech", speech_lattice=False)
    assert speech.sample_rate == 16000
    ref = music_clip("sopr", seconds=2.0)
    lowpassed = mp3_code(ref, 32)
    clean, coded = speech.score(ref, ref), speech.score(ref, lowpassed)
    assert 1.0 <= coded < clean <= 5.0


def test_version_is_recorded():
    from deepaq.visqol import VISQOL_VERSION

    assert VISQOL_VERSION == "3.8.0"


def test_scores_are_reproducible_run_to_run(labeller, music_clip, mp3_code):
    # Byte-identical manifests need labels that agree to the digits the manifest keeps
    # (LABEL_DECIMALS). Exact float equality does not hold in every process: once torch's or
    # numba's thread pools are up (as in a full test session), FFT/reduction order can move the
    # 14th digit.
    from data_prep.pipeline import LABEL_DECIMALS

    ref = music_clip("glock", seconds=3.0)
    deg = mp3_code(ref, 48)
    scores = [labeller.score(ref, deg) for _ in range(3)]
    assert max(scores) - min(scores) < 1e-9, scores
    assert len({round(s, LABEL_DECIMALS) for s in scores}) == 1
    assert labeller.info()["num_threads"] == 1


def test_spectrogram_cache_changes_speed_not_labels(labeller, music_clip, mp3_code):
    # One reference against several conditions, as in a corpus excerpt: the cached labeller must
    # reuse the reference's spectrograms (hits) and give the labels of visqol-python as shipped.
    from data_prep.pipeline import LABEL_DECIMALS
    from deepaq.visqol import VisqolLabeller

    ref = music_clip("harpsichord", seconds=3.0, offset=0.5)
    degraded = [mp3_code(ref, 128), mp3_code(ref, 48), 0.5 * ref, ref]
    plain = VisqolLabeller(mode="audio", cache_mib=0)
    assert plain.cache is None
    tiny = VisqolLabeller(mode="audio", cache_mib=0.05)  # ~52 kB: forces evictions
    cached = VisqolLabeller(mode="audio")
    for deg in degraded:
        want = plain.score(ref, deg)
        for lab in (cached, tiny):
            got = lab.score(ref, deg)
            assert abs(got - want) < 1e-9, (got, want)
            assert round(got, LABEL_DECIMALS) == round(want, LABEL_DECIMALS)
    assert tiny.cache._bytes <= tiny.cache.max_bytes
    # the reference's full spectrogram and its patches repeat for every later condition
    assert cached.cache.hits > cached.cache.misses / 3, (cached.cache.hits, cached.cache.misses)
    assert cached.cache.hits > tiny.cache.hits
