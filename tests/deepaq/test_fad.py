"""Frechet distance: zero for identical sets, the closed form for shifted Gaussians, folders."""

from __future__ import annotations

import numpy as np
import pytest

from deepaq.metrics.fad import fad_folders, frechet_distance, frechet_distance_from_stats


def test_identical_sets_are_at_zero():
    a = np.random.default_rng(0).standard_normal((2000, 16))
    assert frechet_distance(a, a.copy()) == pytest.approx(0.0, abs=1e-6)


def test_shifted_gaussians_match_the_closed_form():
    rng = np.random.default_rng(1)
    d = 8
    cov_root = rng.standard_normal((d, d)) / np.sqrt(d)
    a = rng.standard_normal((40000, d)) @ cov_root
    b = rng.standard_normal((40000, d)) @ cov_root
    previous = -1.0
    for scale in (0.0, 0.5, 1.0, 2.0, 4.0):
        shift = scale * np.ones(d) / np.sqrt(d)
        fd = frechet_distance(a, b + shift)
        # equal covariances: FD = ||mu1 - mu2||^2 (+ sampling noise of O(D / N))
        assert fd == pytest.approx(scale ** 2, abs=0.01 + 0.01 * scale ** 2)
        assert fd > previous
        previous = fd


def test_known_covariance_term():
    # 1-D Gaussians: FD = (m1 - m2)^2 + (s1 - s2)^2
    fd = frechet_distance_from_stats(np.array([1.0]), np.array([[4.0]]),
                                     np.array([0.0]), np.array([[1.0]]))
    assert fd == pytest.approx(1.0 + 1.0)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(10), np.zeros(10))


def test_folders_with_an_embedder(tmp_path, music_clip):
    from deepaq.audio import write_audio

    def embed(x: np.ndarray, sr: int) -> np.ndarray:
        """Per-frame log band energies: a tiny stand-in for a learned embedder."""
        mono = x.mean(0)
        frames = mono[: mono.size // 1024 * 1024].reshape(-1, 1024)
        spec = np.abs(np.fft.rfft(frames, axis=1))[:, :512] ** 2
        return np.log10(spec.reshape(spec.shape[0], 8, -1).mean(-1) + 1e-10)

    for name in ("guitar", "glock", "castanets"):
        x = music_clip(name, seconds=1.0, offset=1.0)
        write_audio(tmp_path / "a" / f"{name}.flac", x, 48000)
        write_audio(tmp_path / "b" / f"{name}.flac", x, 48000)
        noisy = x + 0.05 * np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
        write_audio(tmp_path / "c" / f"{name}.flac", noisy, 48000)
    same = fad_folders(tmp_path / "a", tmp_path / "b", embed)
    other = fad_folders(tmp_path / "a", tmp_path / "c", embed)
    assert same["n_a"] == same["n_b"] == 3 * 46 and same["dim"] == 8
    assert same["fad"] == pytest.approx(0.0, abs=1e-4)
    assert other["fad"] > 1.0
