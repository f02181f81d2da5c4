"""The ``gammatone`` backbone and the NSIM distance against ViSQOL's own code, on real music."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepaq.backbones.gammatone import GammatoneSpectrogram
from deepaq.model import QualityModel
from deepaq.nsim import channel_nsim

NSIM_MODEL = {"backbone": "gammatone", "embed_dim": None, "head": "none", "pooling": "frame",
              "distance": "nsim"}


def _visqol_spectrograms(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ViSQOL's own prepared (dB, floored) gammatone spectrograms of two mono float64 signals."""
    from visqol.analysis_window import AnalysisWindow
    from visqol.audio_utils import AudioSignal
    from visqol.gammatone import GammatoneSpectrogramBuilder, prepare_spectrograms_for_comparison

    builder = GammatoneSpectrogramBuilder(32, 50.0, speech_mode=False)
    window = AnalysisWindow(48000, 0.25, 0.08)
    return prepare_spectrograms_for_comparison(builder.build(AudioSignal(ref, 48000), window),
                                               builder.build(AudioSignal(deg, 48000), window))


def test_band_levels_match_visqol_gammatone_filterbank(music_clip):
    """The STFT read-out of the gammatone bands reproduces ViSQOL's IIR filter bank."""
    from visqol.analysis_window import AnalysisWindow
    from visqol.audio_utils import AudioSignal
    from visqol.gammatone import GammatoneSpectrogramBuilder, convert_to_db

    # Music with energy in every band. Where a dry render's top band holds almost nothing, the
    # read-out drifts there: on the guitar fixture the top band differs by 2.0 dB on average
    # (every other band by <= 0.2 dB), more than these tolerances allow.
    x = music_clip("glock", 3.0).mean(0).astype(np.float64)
    builder = GammatoneSpectrogramBuilder(32, 50.0, speech_mode=False)
    theirs = convert_to_db(builder.build(AudioSignal(x, 48000), AnalysisWindow(48000, 0.25, 0.08)).data)
    theirs = np.maximum(theirs, -45.0)
    theirs = np.maximum(theirs, theirs.max(0) - 45.0)                  # per-clip floors, as ours
    with torch.no_grad():
        hidden, frames = GammatoneSpectrogram()(torch.from_numpy(x).float()[None])
    ours = hidden[0][0].numpy().T - 45.0                                 # [32, F], ViSQOL dB
    assert ours.shape == theirs.shape
    err = np.abs(ours - theirs)
    assert err.mean() < 0.05 and np.percentile(err, 99) < 0.6, (err.mean(), np.percentile(err, 99))
    assert int(frames[0]) == theirs.shape[1]


def test_channel_nsim_equals_visqol_patch_similarity(music_clip, mp3_code):
    """Same maps in -> ViSQOL's per-band NSIM means out (its 3 x 3 window, constants, edges)."""
    from visqol.nsim import measure_patch_similarity

    ref = music_clip("harpsichord", 2.0)
    deg = mp3_code(ref, 32)
    r, d = _visqol_spectrograms(ref.mean(0).astype(np.float64), deg.mean(0).astype(np.float64))
    patch = slice(10, 40)                                              # one 30-frame patch
    expected = measure_patch_similarity(r[:, patch], d[:, patch]).freq_band_means
    a = torch.from_numpy(np.ascontiguousarray(r[:, patch].T))[None]
    b = torch.from_numpy(np.ascontiguousarray(d[:, patch].T))[None]
    got = channel_nsim(a, b, torch.ones(1, 30, dtype=torch.bool))[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert expected.min() < 0.9                                        # MP3 32 really differs


def test_padding_does_not_change_frames_or_distance(music_clip):
    """A clip padded in a batch gives the frames and distance it gives alone."""
    model = QualityModel(**NSIM_MODEL, backbone_args={"windows": [3840, 2048], "bands": [32, 64],
                                                      "hop_length": 480}).eval()
    long, short = music_clip("glock", 2.0), music_clip("glock", 1.3)
    wave = torch.zeros(2, long.shape[1])
    wave[0] = torch.from_numpy(long.mean(0))
    wave[1, : short.shape[1]] = torch.from_numpy(short.mean(0))
    lengths = torch.tensor([long.shape[1], short.shape[1]])
    with torch.no_grad():
        batch, frames = model(wave, lengths, return_frame_lengths=True)
        alone = model(torch.from_numpy(short.mean(0))[None])
    n = int(frames[1])
    assert alone.shape[1] == n and batch.shape[-1] == 96
    torch.testing.assert_close(batch[1, :n], alone[0], rtol=0, atol=1e-4)
    assert bool((batch[1, n:] == 0).all())
    with torch.no_grad():
        d_batch = model.distance(batch[1:], batch[:1, : batch.shape[1]], frames[1:])
        d_alone = model.distance(alone, batch[:1, :n])
    torch.testing.assert_close(d_batch, d_alone, rtol=1e-5, atol=1e-6)


def test_nsim_distance_orders_mp3_bitrates_untrained(music_clip, mp3_code):
    """Equal channel weights already rank clean < 128 < 64 < 32 kbps on real music."""
    model = QualityModel(**NSIM_MODEL).eval()
    ref = music_clip("ravel", 3.0)
    waves = [ref] + [mp3_code(ref, k) for k in (128, 64, 32)]
    with torch.no_grad():
        emb = [model(torch.from_numpy(w.mean(0))[None]) for w in waves]
        d = [float(model.distance(emb[0], e)[0]) for e in emb]
    assert d[0] == pytest.approx(0.0, abs=1e-6)
    assert d[0] < d[1] < d[2] < d[3], d


def test_nsim_needs_frame_pooling_and_head_none_keeps_width():
    with pytest.raises(ValueError, match="pooling='frame'"):
        QualityModel(backbone="gammatone", embed_dim=None, head="none", distance="nsim")
    with pytest.raises(ValueError, match="cannot be honoured"):
        QualityModel(backbone="gammatone", embed_dim=8, head="none", pooling="frame")
    model = QualityModel(**NSIM_MODEL)
    assert model.embed_dim == 32 and model.parameter_counts() == (32, 32)
    assert QualityModel(**model.config()).config() == model.config()
