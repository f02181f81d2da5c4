"""Slaney-style mel filter banks in numpy.

The same triangles as ``transformers.audio_utils.mel_filter_bank`` (a test checks they are equal),
written out here because importing transformers costs seconds, which ``deepaq score`` on one pair
must not pay for a 128 x 1025 matrix.
"""

from __future__ import annotations

import numpy as np

_F_SP = 200.0 / 3.0          # Hz per mel below 1 kHz (Slaney)
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hertz_to_mel(freq: np.ndarray) -> np.ndarray:
    freq = np.asarray(freq, dtype=np.float64)
    mel = freq / _F_SP
    log_region = freq >= _MIN_LOG_HZ
    return np.where(log_region, _MIN_LOG_MEL + np.log(np.maximum(freq, 1e-10) / _MIN_LOG_HZ)
                    / _LOGSTEP, mel)


def mel_to_hertz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    freq = mel * _F_SP
    log_region = mel >= _MIN_LOG_MEL
    return np.where(log_region, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), freq)


def mel_filter_bank(num_frequency_bins: int, num_mel_filters: int, min_frequency: float,
                    max_frequency: float, sampling_rate: int, norm: str | None = None) -> np.ndarray:
    """``(num_frequency_bins, num_mel_filters)`` triangles on the Slaney mel scale; ``norm="slaney"``
    scales each to unit area (constant energy per band), ``None`` keeps peak 1."""
    mels = np.linspace(hertz_to_mel(min_frequency), hertz_to_mel(max_frequency),
                       num_mel_filters + 2)
    edges = mel_to_hertz(mels)
    fft_freqs = np.linspace(0, sampling_rate // 2, num_frequency_bins)
    diff = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    if norm == "slaney":
        filters *= 2.0 / (edges[2:num_mel_filters + 2] - edges[:num_mel_filters])
    elif norm is not None:
        raise ValueError(f"norm must be None or 'slaney', got {norm!r}")
    return filters
