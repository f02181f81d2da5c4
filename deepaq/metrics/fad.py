"""Frechet distance between two sets of embeddings (the "FAD" of Kilgour et al., 2019).

Why written here: it is a dozen lines over scipy, and owning it lets us document and test the
numerical fixes. FAD compares *distributions* (e.g. DeePAQ embeddings of a clean folder vs a coded
folder), not pairs, so it is not a per-item metric of the registry.

    FD = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

Sample-size caveats:
- Each covariance is estimated from N samples in D dimensions; with N <= D it is singular and the
  distance is dominated by estimation noise. Use N >> D (several times D; for D = 256 DeePAQ
  embeddings, thousands of clips or frames) and always report N next to the value.
- FD is biased upwards for finite N (bias ~ 1/N; Chong & Forsyth 2020, Gui et al. 2024): values
  are only comparable between runs with the same N (and the same embedder). For small sets,
  compare at several N or extrapolate to N -> inf.
- Identical sets give ~0 only up to the square-root's numerical error (~1e-6 relative).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of an [N, D] embedding set."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need an [N, D] array with N >= 2, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance_from_stats(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray,
                                eps: float = 1e-6) -> float:
    """Frechet distance of two Gaussians, with the usual fixes for the matrix square root.

    A near-singular product gets ``eps`` added on the diagonals before the square root; a complex
    result with negligible imaginary part (numerical noise) is reduced to its real part.
    """
    from scipy import linalg

    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(s1).astype(np.float64), np.atleast_2d(s2).astype(np.float64)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        logger.warning("singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"matrix square root has imaginary part "
                             f"{np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(fd, 0.0)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between embedding sets a [N, D] and b [M, D] (see module caveats)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need [N, D] and [M, D] with the same D, got {a.shape} and {b.shape}")
    if min(a.shape[0], b.shape[0]) <= a.shape[1]:
        logger.warning("FAD with N=%d, M=%d <= D=%d: covariances are singular, the value is "
                       "dominated by estimation noise", a.shape[0], b.shape[0], a.shape[1])
    return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def embed_folder(folder: str | Path, embed: Callable[[np.ndarray, int], np.ndarray],
                 extensions: Iterable[str] | None = None) -> np.ndarray:
    """Embed every audio file under ``folder`` -> [N, D] (one row per file or per frame).

    ``embed(audio (C, N) float32, sample_rate) -> [D] or [frames, D]``. Files are read in sorted
    order with ``deepaq.audio.read_audio``; a file that fails is logged and skipped.
    """
    from deepaq.audio import AUDIO_EXTENSIONS, read_audio

    exts = {e.lower() for e in (extensions or AUDIO_EXTENSIONS)}
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in exts)
    rows: list[np.ndarray] = []
    for path in paths:
        try:
            x, sr = read_audio(path)
        except ValueError as err:
            logger.warning("skipping %s: %s", path, err)
            continue
        rows.append(np.atleast_2d(np.asarray(embed(x, sr), dtype=np.float64)))
    if not rows:
        raise ValueError(f"no readable audio under {folder}")
    return np.concatenate(rows, axis=0)


def fad_folders(folder_a: str | Path, folder_b: str | Path,
                embed: Callable[[np.ndarray, int], np.ndarray]) -> dict[str, float | int]:
    """FAD between two folders with one embedder -> {"fad", "n_a", "n_b", "dim"} (report N!)."""
    a, b = embed_folder(folder_a, embed), embed_folder(folder_b, embed)
    return {"fad": frechet_distance(a, b), "n_a": int(a.shape[0]), "n_b": int(b.shape[0]),
            "dim": int(a.shape[1])}
