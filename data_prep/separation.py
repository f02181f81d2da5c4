"""Source-separation artefacts made from stems: interference, mask artefacts, and both.

Why: listeners judge separated sources by two different faults, energy that should not be there
(the other instruments leaking in: *interference*) and energy that is missing or warbles
(spectral holes and musical noise from a time-frequency mask: *artefacts*). A metric trained only
on codecs confuses them. With the stems of a mix, both can be made at a known level:

- ``interference``: the target stem plus the other stems scaled to ``level`` dB SIR;
- ``artefacts``: the mix (target + others) through the target's oracle ratio mask corrupted with
  strength ``level`` in [0, 1] (0: the oracle mask itself). The corruption (``mask=``) is one of
  :data:`MASK_TYPES`: ``noisy`` (random errors per bin: musical noise), ``smoothed`` (blurred over
  time and frequency: smearing, leakage), ``binary`` (the ideal binary mask with ever more random
  holes) or ``suppress`` (low-level bins gated off ever higher: over-suppression, dull and holed);
- ``interference+artefacts``: the ``artefacts`` estimate plus the others leaking in with a gain
  of ``level * max_leak`` (0.5: at full strength the others come through at -6 dB of their
  level in the mix), so interference and artefacts grow together.

Each returns the estimate and its BSS-Eval-style SDR/SIR/SAR (:func:`bss_eval_gain`), computed
from the known components. ``others`` are the other stems; on a recording without stems, pass any
other recording (or the rest of the mix) as the interferer. ``input_sir_db`` scales the others
before mixing (None: as given, i.e. the stems' own balance).
"""

from __future__ import annotations

import numpy as np

from data_prep.degradations import power, ratio_db, register_degradation

MASK_TYPES = ("noisy", "smoothed", "binary", "suppress")
N_FFT = 2048
HOP = 512
_EPS = 1e-12


# -- STFT and masks ---------------------------------------------------------------------------------

def stft(x: np.ndarray, sr: int) -> np.ndarray:
    """(C, N) -> (C, F, T) complex, Hann 2048 / hop 512 (75 % overlap: exact inverse)."""
    from scipy.signal import stft as _stft

    return _stft(x.astype(np.float64), fs=sr, window="hann", nperseg=N_FFT,
                 noverlap=N_FFT - HOP, axis=-1)[2]


def istft(spec: np.ndarray, sr: int, n: int) -> np.ndarray:
    from scipy.signal import istft as _istft

    from deepaq.alignment import fit_length

    y = _istft(spec, fs=sr, window="hann", nperseg=N_FFT, noverlap=N_FFT - HOP,
               time_axis=-1, freq_axis=-2)[1]
    return fit_length(y, n)


def oracle_mask(target_spec: np.ndarray, interference_spec: np.ndarray) -> np.ndarray:
    """The ideal ratio mask |T| / sqrt(|T|^2 + |I|^2), in [0, 1]."""
    t, i = np.abs(target_spec) ** 2, np.abs(interference_spec) ** 2
    return np.sqrt(t / (t + i + _EPS))


def corrupt_mask(mask: np.ndarray, mask_type: str, strength: float, rng: np.random.Generator,
                 mix_magnitude: np.ndarray | None = None) -> np.ndarray:
    """The oracle ``mask`` damaged with ``strength`` in [0, 1] (0: unchanged, except ``binary``,
    which is the ideal binary mask at 0); more strength, more damage, for every type.
    ``suppress`` gates on the masked mix's magnitude (``mix_magnitude``; the mask alone if None)."""
    from scipy.ndimage import uniform_filter

    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"mask corruption strength must be in [0, 1], got {strength:g}")
    if mask_type == "noisy":
        return np.clip(mask + 0.5 * strength * rng.standard_normal(mask.shape), 0.0, 1.0)
    if mask_type == "smoothed":
        size = (1, 1 + 2 * round(8 * strength), 1 + 2 * round(8 * strength))  # (C, F, T)
        return uniform_filter(mask, size=size, mode="nearest")
    if mask_type == "binary":
        binary = (mask > 0.5).astype(np.float64)
        return binary * (rng.random(mask.shape) >= 0.5 * strength)   # random spectral holes
    if mask_type == "suppress":
        if strength == 0.0:
            return mask
        # spectral gating: bins of the estimate more than 45 - 40 * strength dB below their
        # frame's loudest bin go to zero (low-level detail and decays removed: dull, holed)
        est = mask * mix_magnitude if mix_magnitude is not None else mask
        level = 20 * np.log10(est / (est.max(axis=-2, keepdims=True) + _EPS) + _EPS)
        return mask * (level > -45.0 + 40.0 * strength)
    raise ValueError(f"unknown mask type {mask_type!r}; choose from {', '.join(MASK_TYPES)}")


# -- measuring ------------------------------------------------------------------------------------

def bss_eval_gain(estimate: np.ndarray, target: np.ndarray,
                  others: list[np.ndarray]) -> dict:
    """SDR, SIR and SAR (dB) as BSS-Eval defines them, with a gain as the allowed distortion
    (a 1-tap filter, as SI-SDR): the estimate is split into its projection on the target
    (``s_target``), the rest of its projection on the span of all sources (``e_interf``) and what
    lies outside that span (``e_artif``). All channels count as one signal; a part more than
    150 dB down is float rounding, reported as absent (+inf dB)."""
    e = estimate.astype(np.float64).ravel()
    s = target.astype(np.float64).ravel()
    basis = np.stack([s] + [o.astype(np.float64).ravel() for o in others])
    s_target = (e @ s) / max(s @ s, _EPS) * s
    coef, *_ = np.linalg.lstsq(basis @ basis.T, basis @ e, rcond=None)
    p_all = coef @ basis
    e_interf, e_artif = p_all - s_target, e - p_all
    pt = float(s_target @ s_target)

    def ratio(num: float, den: float) -> float:
        # a part 150 dB down is numerical noise (float32 audio): report it as absent
        return ratio_db(num, den if den > num * 1e-15 else 0.0)

    return {"sdr_db": round(ratio(pt, float((e_interf + e_artif) @ (e_interf + e_artif))), 3),
            "sir_db": round(ratio(pt, float(e_interf @ e_interf)), 3),
            "sar_db": round(ratio(float(p_all @ p_all), float(e_artif @ e_artif)), 3)}


# -- the families ---------------------------------------------------------------------------------

def scale_others(target: np.ndarray, others: list[np.ndarray],
                 sir_db: float | None) -> list[np.ndarray]:
    """``others`` with one common gain so that P(target) / P(sum of others) is ``sir_db`` dB
    (None: unchanged)."""
    if sir_db is None:
        return [o.astype(np.float64) for o in others]
    p_t, p_o = power(target), power(np.sum(others, axis=0))
    if p_t <= 0 or p_o <= 0:
        raise ValueError("cannot set an SIR with a silent target or silent interferers")
    g = np.sqrt(p_t / (p_o * 10.0 ** (sir_db / 10.0)))
    return [g * o.astype(np.float64) for o in others]


def masked_mix(target: np.ndarray, others: list[np.ndarray], sr: int, strength: float,
               rng: np.random.Generator, mask: str) -> np.ndarray:
    """The mix through the target's oracle mask corrupted with ``strength``."""
    interference = np.sum(others, axis=0)
    t_spec, i_spec = stft(target, sr), stft(interference, sr)
    mix_spec = t_spec + i_spec
    m = corrupt_mask(oracle_mask(t_spec, i_spec), mask, strength, rng, np.abs(mix_spec))
    return istft(m * mix_spec, sr, target.shape[1])


def _limit(out: np.ndarray, limit: float | None) -> np.ndarray:
    """Clip before measuring, so that the measures describe the stored audio."""
    return out if limit is None else np.clip(out, -limit, limit)


@register_degradation("interference", unit="dB SIR", higher_is_better=True, jnd=2.0,
                      kind="separation")
def interference(target: np.ndarray, others: list[np.ndarray], sr: int, level: float,
                 rng: np.random.Generator, limit: float | None = None) -> tuple[np.ndarray, dict]:
    """The target plus the other stems at ``level`` dB SIR (leakage, no artefacts)."""
    scaled = scale_others(target, others, level)
    out = _limit(target + np.sum(scaled, axis=0), limit)
    return out, bss_eval_gain(out, target, scaled)


@register_degradation("artefacts", unit="mask corruption", higher_is_better=False, jnd=0.1,
                      kind="separation")
def artefacts(target: np.ndarray, others: list[np.ndarray], sr: int, level: float,
              rng: np.random.Generator, mask: str = "noisy",
              input_sir_db: float | None = None,
              limit: float | None = None) -> tuple[np.ndarray, dict]:
    """The mix through the target's oracle mask corrupted with strength ``level`` in [0, 1]."""
    scaled = scale_others(target, others, input_sir_db)
    out = _limit(masked_mix(target, scaled, sr, level, rng, mask), limit)
    return out, {**bss_eval_gain(out, target, scaled), "mask_type": mask}


@register_degradation("interference+artefacts", unit="mask corruption", higher_is_better=False,
                      jnd=0.1, kind="separation")
def interference_artefacts(target: np.ndarray, others: list[np.ndarray], sr: int, level: float,
                           rng: np.random.Generator, mask: str = "noisy",
                           input_sir_db: float | None = None,
                           max_leak: float = 0.5,
                           limit: float | None = None) -> tuple[np.ndarray, dict]:
    """As ``artefacts``, plus the others leaking in with the gain ``level * max_leak``."""
    if not 0.0 <= max_leak < 1.0:
        raise ValueError(f"max_leak must be in [0, 1), got {max_leak:g}")
    scaled = scale_others(target, others, input_sir_db)
    leak = level * max_leak * np.sum(scaled, axis=0)
    out = _limit(masked_mix(target, scaled, sr, level, rng, mask) + leak, limit)
    return out, {**bss_eval_gain(out, target, scaled), "mask_type": mask}


__all__ = ["MASK_TYPES", "artefacts", "bss_eval_gain", "corrupt_mask", "interference",
           "interference_artefacts", "masked_mix", "oracle_mask", "scale_others"]
