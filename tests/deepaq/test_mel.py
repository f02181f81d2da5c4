"""The numpy mel filter bank equals transformers' (the one the models were designed with)."""

from __future__ import annotations

import numpy as np
import pytest

from deepaq.mel import mel_filter_bank


@pytest.mark.parametrize("norm", [None, "slaney"])
@pytest.mark.parametrize("sr,n_fft,n_mels", [(48000, 2048, 128), (16000, 400, 80)])
def test_matches_transformers(norm, sr, n_fft, n_mels):
    from transformers.audio_utils import mel_filter_bank as reference

    want = reference(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                     max_frequency=sr / 2, sampling_rate=sr, norm=norm, mel_scale="slaney")
    got = mel_filter_bank(n_fft // 2 + 1, n_mels, 0.0, sr / 2, sr, norm=norm)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert (got >= 0).all() and (got.max(axis=0) > 0).all()  # every band catches some bins
