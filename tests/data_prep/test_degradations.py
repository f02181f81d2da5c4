"""Every distortion family's ladder is ordered on real music, and what is measured matches what
was asked; invariances are exactly (or very nearly) what they claim."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from data_prep.degradations import (
    available,
    cutoff_hz,
    delay_samples,
    get_degradation,
    ladder,
    power,
    register_degradation,
)
from data_prep.separation import MASK_TYPES, bss_eval_gain

SR = 48000


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def apply(name: str, x: np.ndarray, level: float, **kwargs):
    return get_degradation(name).apply(x, SR, level, rng(), **kwargs)


def test_registry_kinds():
    assert {"resample_bandlimit", "lowpass", "noise_white"} <= set(available("family"))
    assert set(available("invariance")) == {"gain", "polarity", "resample_roundtrip", "delay"}
    assert set(available("separation")) == {"interference", "artefacts",
                                            "interference+artefacts"}
    for name in available("invariance"):
        assert get_degradation(name).higher_is_better is None
    for name in available("family") + available("separation"):
        assert isinstance(get_degradation(name).higher_is_better, bool)
    with pytest.raises(ValueError, match="invariances"):
        register_degradation("bad", unit="dB", higher_is_better=True, jnd=0.0,
                             kind="invariance")
    with pytest.raises(ValueError, match="kind"):
        register_degradation("bad", unit="dB", higher_is_better=True, jnd=0.0, kind="codec")


def test_noise_snr_is_measured_as_asked(music_clip):
    x = music_clip()
    for name in ("noise_white", "noise_pink"):
        got = [apply(name, x, lv).measures["snr_db"] for lv in (0, 10, 20, 30)]
        # exact by construction (the noise gain is set from the same powers), up to rounding
        np.testing.assert_allclose(got, [0, 10, 20, 30], atol=2e-3)


def test_band_limits_are_measured_where_asked(music_clip):
    x = music_clip()
    lows = [apply("lowpass", x, f).measures["cutoff_hz"] for f in (2000, 4000, 8000, 12000)]
    # zero-phase Butterworth: the power ratio is exactly -6 dB at the design frequency; the
    # spectrum estimate (Welch, 5.9 Hz bins) puts the crossing within 0.2 %
    np.testing.assert_allclose(lows, [2000, 4000, 8000, 12000], rtol=2e-3)
    rates = [8000, 16000, 22050, 32000]
    cut = [apply("resample_bandlimit", x, r).measures["cutoff_hz"] for r in rates]
    assert cut == sorted(cut)
    # soxr's high-quality filter passes 95 % of the intermediate Nyquist frequency
    ratio = np.array(cut) / (np.array(rates) / 2)
    assert np.all((ratio > 0.90) & (ratio < 1.0)), ratio
    # and nothing above the new Nyquist frequency survives
    y = apply("resample_bandlimit", x, 16000).audio
    w = np.hanning(x.shape[1])
    spec_x = np.abs(np.fft.rfft(w * x.sum(0))) ** 2
    spec_y = np.abs(np.fft.rfft(w * y.sum(0))) ** 2
    f = np.fft.rfftfreq(x.shape[1], 1 / SR)
    assert spec_y[f > 8500].sum() < 1e-5 * spec_x[f > 8500].sum()


def test_cutoff_of_untouched_audio_is_nyquist(music_clip):
    x = music_clip()
    assert cutoff_hz(x, x, SR) == SR / 2


def test_interference_sir_is_what_was_asked(music_clip):
    target, other = music_clip("guitar"), music_clip("sopr")
    for sir in (-5, 0, 10, 20, 30):
        m = apply("interference", target, sir, others=other).measures
        # BSS-Eval projects the estimate on the target; the two recordings are nearly
        # uncorrelated, so the projection moves the SIR by much less than 0.1 dB
        assert m["sir_db"] == pytest.approx(sir, abs=0.1)
        assert m["sar_db"] > 100.0            # purely additive: no artefacts
    with pytest.raises(ValueError, match="others"):
        apply("interference", target, 10)


@pytest.mark.parametrize("mask", MASK_TYPES)
def test_artefacts_ladder_is_ordered(music_clip, mask):
    target, other = music_clip("guitar"), music_clip("sopr")
    levels = [0.0, 1 / 3, 2 / 3, 1.0]
    ms = [apply("artefacts", target, lv, others=other, mask=mask).measures for lv in levels]
    sdr = [m["sdr_db"] for m in ms]
    assert all(a > b for a, b in pairwise(sdr)), sdr
    assert sdr[0] - sdr[-1] > 3.0, sdr
    assert {m["mask_type"] for m in ms} == {mask}
    if mask != "smoothed":          # a blurred mask leaks the others in: interference, not SAR
        sar = [m["sar_db"] for m in ms]
        assert sar[0] - sar[-1] > 3.0, sar


@pytest.mark.parametrize("mask", MASK_TYPES)
def test_interference_plus_artefacts_ladder_is_ordered(music_clip, mask):
    target, other = music_clip("guitar"), music_clip("sopr")
    ms = [d.measures for d in ladder("interference+artefacts", target, SR, [0.0, 0.5, 1.0],
                                      others=other, mask=mask)]
    for k in ("sdr_db", "sir_db"):
        v = [m[k] for m in ms]
        assert all(a > b for a, b in pairwise(v)), (k, v)


def test_bss_eval_splits_known_parts(music_clip):
    target, other = music_clip("guitar"), music_clip("sopr")
    noise = rng(1).standard_normal(target.shape).astype(np.float32) * 0.01
    m = bss_eval_gain(target + 0.1 * other + noise, target, [other])
    assert m["sir_db"] == pytest.approx(10 * np.log10(power(target) / power(0.1 * other)), abs=0.2)
    assert m["sar_db"] == pytest.approx(
        10 * np.log10(power(target + 0.1 * other) / power(noise)), abs=0.2)


# -- invariances --------------------------------------------------------------------------------

def test_gain_and_polarity_are_exact(music_clip):
    x = music_clip()
    for db in (-10, -3, 6):
        np.testing.assert_array_equal(apply("gain", x, db).audio,
                                      x * np.float32(10 ** (db / 20)))
    np.testing.assert_array_equal(apply("polarity", x, -1).audio, -x)
    with pytest.raises(ValueError, match="polarity"):
        apply("polarity", x, 0.5)


def test_delay_is_exact_in_samples(music_clip):
    x = music_clip()
    for ms in (0.5, 2.0, 5.0, -1.0):
        d = delay_samples(ms, SR)
        y = apply("delay", x, ms).audio
        assert y.shape == x.shape
        if d > 0:
            np.testing.assert_array_equal(y[:, d:], x[:, :-d])
            assert not y[:, :d].any()
        else:
            np.testing.assert_array_equal(y[:, :d], x[:, -d:])
    assert delay_samples(2.0, SR) == 96


def test_resample_round_trip_is_close(music_clip):
    x = music_clip()
    d = apply("resample_roundtrip", x, 44100)
    assert d.measures["cutoff_hz"] > 20000      # the band limit sits above hearing
    # below 20 kHz the round trip is the original to within -60 dB
    from scipy.signal import butter, sosfiltfilt

    sos = butter(8, 19000, fs=SR, output="sos")
    a, b = sosfiltfilt(sos, x, axis=-1), sosfiltfilt(sos, d.audio, axis=-1)
    err = 10 * np.log10(np.mean((a - b) ** 2) / np.mean(a ** 2))
    assert err < -60, err


# -- a corpus with families ---------------------------------------------------------------------

def _render_with_stems(out):
    """A rendered piece with stems (its index), or None without music21/fluidsynth."""
    import importlib.util
    import shutil

    from data_prep import render

    if (importlib.util.find_spec("music21") is None or shutil.which("fluidsynth") is None
            or not render.SOUNDFONT.is_file()):
        return None
    assert render.main([str(out), "--works", "bach/bwv66.6", "--max-seconds", "3", "--seed", "3",
                        "--stems", "-q"]) == 0
    return out / "index.jsonl"


def test_build_writes_family_rows_without_labels(tmp_path, music_clip):
    """deepaq-prep build with a degradations: section and --labels none: every family's ladder,
    separation from the rendered stems (reference: the target stem), measured fields filled."""
    import yaml

    from data_prep.cli import main
    from deepaq.audio import read_audio, write_audio
    from deepaq.manifest import FIELDS, read_manifest, to_pairs

    index = _render_with_stems(tmp_path / "render")
    write_audio(tmp_path / "guitar.wav", music_clip(seconds=3.0), SR)   # a recording, no stems
    grid = {"codecs": {"opus": {"encoder": "libopus", "container": "ogg", "sample_rate": 48000,
                                "bitrates_kbps": [64], "options": {"vbr": "constrained"}}},
            "degradations": {"noise_pink": {"levels": [10, 30]}, "lowpass": {"levels": [4000]},
                             "interference": {"levels": [0, 12]},
                             "artefacts": {"levels": [0.3, 0.9], "masks": ["binary"]},
                             "gain": {"levels": [-6]}, "delay": {"levels": [2]}}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    out = tmp_path / "corpus"
    inputs = [str(tmp_path / "guitar.wav")] + ([str(index)] if index else [])
    code = main(["build", *inputs, "-o", str(out),
                 "--grid", str(tmp_path / "grid.yaml"), "--excerpt-seconds", "3",
                 "--labels", "none", "-q"])
    assert code == 0
    rows = read_manifest(out / "manifest.jsonl")
    assert all(list(r) == list(FIELDS) for r in rows)
    by = {}
    for r in rows:
        by.setdefault(r["track_id"], {})[r["condition"]] = r
    guitar = by["guitar"]
    # the recording without stems gets every family but the separation ones
    assert set(guitar) == {"clean", "opus_064", "noise_pink_10", "noise_pink_30",
                           "lowpass_4000", "gain_m6", "delay_2"}
    assert guitar["opus_064"]["family"] == "opus" and guitar["opus_064"]["level_unit"] == "kbps"
    assert guitar["clean"]["family"] is None and guitar["clean"]["level"] is None
    for tr in by.values():
        assert all(np.isnan(r["visqol"]) for r in tr.values())   # null, read as NaN
        n10, n30 = tr["noise_pink_10"], tr["noise_pink_30"]
        assert (n10["family"], n10["level"], n10["level_unit"], n10["level_higher_is_better"],
                n10["invariance"]) == ("noise_pink", 10.0, "dB SNR", True, False)
        assert n10["snr_db"] == pytest.approx(10, abs=0.05)
        assert n30["snr_db"] == pytest.approx(30, abs=0.05)
        assert tr["lowpass_4000"]["cutoff_hz"] == pytest.approx(4000, rel=0.01)
        assert tr["gain_m6"]["invariance"] and tr["gain_m6"]["level_higher_is_better"] is None
        x, _ = read_audio(out / tr["clean"]["path"])
        y, _ = read_audio(out / tr["delay_2"]["path"])
        np.testing.assert_array_equal(y[:, 96:], x[:, :-96])        # 2 ms = 96 samples, exact
    if index is None:
        pytest.skip("music21 or fluidsynth missing: the separation families (stems) untested")
    bach = by["bach_bwv66.6"]
    assert set(bach) == set(guitar) | {"interference_0", "interference_12", "artefacts_0p3",
                                       "artefacts_0p9"}
    i0, i12 = bach["interference_0"], bach["interference_12"]
    assert i0["reference"] == i12["reference"] != bach["clean"]["path"]   # the target stem
    assert i0["target_stem"].endswith(".flac") and "stems" in i0["target_stem"]
    # measured on the stored files' values: 24-bit FLAC and the stems' own correlation aside,
    # the SIR is the one asked for
    assert i0["sir_db"] == pytest.approx(0, abs=0.5) and i12["sir_db"] == pytest.approx(12, abs=0.5)
    a3, a9 = bach["artefacts_0p3"], bach["artefacts_0p9"]
    assert a3["mask_type"] == a9["mask_type"] == "binary"
    assert a3["sdr_db"] > a9["sdr_db"] and a3["sar_db"] > a9["sar_db"]
    pairs = {p["condition"]: p for p in to_pairs(list(bach.values()), out)}
    assert "clean" not in pairs and pairs["artefacts_0p3"]["reference"].endswith("target.flac")
    assert pairs["noise_pink_10"]["reference"].endswith("clean.flac")
    target, _ = read_audio(out / a3["reference"])
    stem = read_audio(a3["target_stem"])[0][:, :target.shape[1]]
    np.testing.assert_allclose(target, stem, atol=2.0 ** -23)


def test_grid_section_is_checked_and_clipped_invariances_left_out(music_clip):
    from data_prep.families import family_items, load_families

    specs = load_families({"degradations": {"gain": {"levels": [-6, 20]},
                                            "noise_white": {"levels": [-10]}}})
    x = music_clip()
    items = {it["condition"]: it for it in family_items(x, SR, specs, "ex", seed=0)}
    assert "audio" in items["gain_m6"]
    assert "would clip" in items["gain_20"]["error"]           # +20 dB is not transparent
    noisy = items["noise_white_m10"]                           # a family may clip: as stored
    assert np.abs(noisy["audio"]).max() <= 1.0 and noisy["snr_db"] < -9.0
    for bad, msg in [({"gain": {}}, "levels"), ({"nope": {"levels": [1]}}, "unknown degradation"),
                     ({"gain": {"levels": [1], "masks": ["noisy"]}}, "masks"),
                     ({"artefacts": {"levels": [0.5], "masks": ["bad"]}}, "unknown masks"),
                     ({"lowpass": {"levels": [1000], "order": 4}}, "unknown options")]:
        with pytest.raises(ValueError, match=msg):
            load_families({"degradations": bad})


def test_manifests_from_before_the_family_fields_read_as_codec_families(tmp_path):
    import json

    from deepaq.manifest import CORE_FIELDS, FIELDS, make_row, read_manifest, sort_rows

    base = dict.fromkeys(CORE_FIELDS) | {"excerpt_id": "t__00000000", "split": "train"}
    old = [base | {"key": "t__00000000__opus_032", "condition": "opus_032", "codec": "opus",
                   "bitrate_requested_kbps": 32.0, "bitrate_label": 33.1},
           base | {"key": "t__00000000__clean", "condition": "clean",
                   "bitrate_requested_kbps": "inf", "bitrate_label": "inf"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    rows = {r["condition"]: r for r in read_manifest(tmp_path / "m.jsonl")}
    assert set(rows["opus_032"]) == set(FIELDS)
    assert (rows["opus_032"]["family"], rows["opus_032"]["level"],
            rows["opus_032"]["level_higher_is_better"]) == ("opus", 33.1, True)
    assert rows["clean"]["family"] is None and rows["clean"]["invariance"] is None
    # canonical order: clean first, then by codec (family rows have none) and family, then level
    made = [make_row(**(base | {"key": f"k{i}", "condition": c, "codec": codec,
                                "bitrate_requested_kbps": kbps, "bitrate_label": kbps,
                                "family": fam, "level": lv}))
            for i, (c, codec, kbps, fam, lv) in enumerate([
                ("noise_pink_20", None, None, "noise_pink", 20.0),
                ("opus_064", "opus", 64.0, None, None), ("clean", None, float("inf"), None, None),
                ("noise_pink_10", None, None, "noise_pink", 10.0),
                ("opus_032", "opus", 32.0, None, None)])]
    assert [r["condition"] for r in sort_rows(made)] == [
        "clean", "noise_pink_10", "noise_pink_20", "opus_032", "opus_064"]
