"""PEAQ, Basic version (ITU-R BS.1387-1), written from the Recommendation and P. Kabal's report.

Why in the project: PEAQ is the classical reference metric for coded audio, and DeePAQ is compared
against it. No maintained Python package implements it, so it is written here, vectorised over
frames with numpy (a 10 s stereo pair takes well under a second on one core).

Pipeline (BS.1387-1 section 2 and 4-6; Kabal 2003 gives the interpretations used):
FFT ear model (2048-sample Hann frames, hop 1024, 92 dB SPL for a full-scale sine) -> outer/middle
ear weighting -> grouping into 109 quarter-Bark bands -> internal noise -> level-dependent frequency
spreading -> time-domain spreading -> masking threshold / excitation patterns -> level and pattern
adaptation, modulation patterns, loudness -> the 11 MOVs of the Basic version -> neural network
(3 hidden nodes) -> distortion index (DI) and objective difference grade (ODG, 0 .. -4).

Interpretations that the text leaves open follow Kabal's PQevalAudio (v2r0): data boundary from
the reference (5-sample |x| sums > 200 on the 16-bit scale), warm-up frames before the boundary
count towards the 0.5 s delay of the modulation MOVs, noise loudness starts 50 ms after both signals
exceed 0.1 sone, EHS frames need a second-half-frame energy >= 8000 (16-bit scale) in either
signal, EHS correlation lags start at 1, pattern-correction state starts at 0, MOVs are not clipped.
Input at other rates is resampled to 48 kHz. Material band-limited below 24 kHz (e.g. 44.1 kHz
sources) has no energy above 21.6 kHz, where the bandwidth MOVs take their noise floor, so its
absolute ODGs are not comparable with those of full-band 48 kHz material: compare within one rate.
Stereo: the detection probability is combined binaurally (per band, the larger of the two channels)
for ADBB and MFPDB; every other MOV is computed per channel and averaged over channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from deepaq.metrics import Metric, MetricInfo

FS = 48000          # the only rate the standard is calibrated for
NF = 2048           # FFT frame length
NADV = NF // 2      # hop
AMAX = 32768.0      # 16-bit full scale; float input in [-1, 1] is scaled by this
LP = 92.0           # dB SPL of a full-scale sine
FSS = FS / NADV     # frame rate (46.875 Hz)
DZ = 0.25           # band width in Bark (Basic version)
EMIN = 1e-12        # floor of the band energies

MOV_NAMES: tuple[str, ...] = (
    "BandwidthRefB", "BandwidthTestB", "TotalNMRB", "WinModDiff1B", "ADBB", "EHSB",
    "AvgModDiff1B", "AvgModDiff2B", "RmsNoiseLoudB", "MFPDB", "RelDistFramesB",
)

# Neural network of the Basic version (BS.1387-1 Tables 8-11): MOV scaling, weights, output scaling.
_AMIN = np.array([393.916656, 361.965332, -24.045116, 1.110661, -0.206623, 0.074318, 1.113683,
                  0.950345, 0.029985, 0.000101, 0.0])
_AMAX = np.array([921.0, 881.131226, 16.212030, 107.137772, 2.886017, 13.933351, 63.257874,
                  1145.018555, 14.819740, 1.0, 1.0])
_WX = np.array([
    [-0.502657, 0.436333, 1.219602],
    [4.307481, 3.246017, 1.123743],
    [4.984241, -2.211189, -0.192096],
    [0.051056, -1.762424, 4.331315],
    [2.321580, 1.789971, -0.754560],
    [-5.303901, -3.452257, -10.814982],
    [2.730991, -6.111805, 1.519223],
    [0.624950, -1.331523, -5.955151],
    [3.102889, 0.871260, -5.922878],
    [-1.051468, -0.939882, -0.142913],
    [-1.804679, -0.503610, -0.620456],
])
_WXB = np.array([-2.518254, 0.654841, -2.207228])
_WY = np.array([-3.817048, 4.107138, 4.629582])
_WYB = -0.307594
_BMIN, _BMAX = -3.98, 0.22

# Ranges a MOV can take: definitional bounds where there are some (bandwidths are FFT bins below
# 1024, MFPDB and RelDistFramesB are fractions, ADBB >= -0.5 by its definition), elsewhere generous
# bounds around the network's scaling range (_AMIN/_AMAX, the span of its training data). Used by
# the tests; values outside _AMIN/_AMAX are extrapolation for the network.
MOV_RANGES: dict[str, tuple[float, float]] = {
    "BandwidthRefB": (0.0, 1024.0), "BandwidthTestB": (0.0, 1024.0),
    "TotalNMRB": (-200.0, 40.0), "WinModDiff1B": (0.0, 300.0), "ADBB": (-0.5, 5.0),
    "EHSB": (0.0, 50.0), "AvgModDiff1B": (0.0, 200.0), "AvgModDiff2B": (0.0, 3000.0),
    "RmsNoiseLoudB": (0.0, 50.0), "MFPDB": (0.0, 1.0), "RelDistFramesB": (0.0, 1.0),
}


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-x))


def movs_to_di(movs: dict[str, float]) -> float:
    """Distortion index from the 11 MOVs (the standard's network, no MOV clipping)."""
    x = np.array([movs[n] for n in MOV_NAMES], dtype=np.float64)
    xn = (x - _AMIN) / (_AMAX - _AMIN)
    return float(_WYB + _WY @ _sigmoid(_WXB + xn @ _WX))


def di_to_odg(di: float) -> float:
    """ODG = bmin + (bmax - bmin) * sigmoid(DI): 0 imperceptible ... -4 very annoying."""
    return float(_BMIN + (_BMAX - _BMIN) * _sigmoid(di))


# ----------------------------------------------------------------------------- tables

def _time_constants(fc: np.ndarray, t100: float, tmin: float) -> np.ndarray:
    """Per-band smoothing factor a = exp(-1 / (Fss * tau)), tau = tmin + 100 Hz / fc * (t100 - tmin)."""
    tau = tmin + (100.0 / fc) * (t100 - tmin)
    return np.exp(-1.0 / (FSS * tau))


@dataclass(frozen=True)
class _Tables:
    hw: np.ndarray        # scaled Hann window (includes the loudness gain GL)
    w2: np.ndarray        # outer/middle ear weighting, power, per FFT bin
    u: np.ndarray         # (bins, bands) overlap of FFT bins with the bands
    fc: np.ndarray        # band centre frequencies (Hz)
    ein: np.ndarray       # internal noise per band
    bs: np.ndarray        # spreading normalisation
    a_low_e: float        # lower spreading slope, per band, to the power 0.4
    a_up_c: np.ndarray    # level-independent part of the upper slope, per band
    gm: np.ndarray        # masking offset as a power factor
    a_tds: np.ndarray     # time-domain spreading
    a_adp: np.ndarray     # level/pattern adaptation and modulation patterns
    et_loud: np.ndarray   # loudness threshold E_t
    s_loud: np.ndarray    # threshold index s
    ets_loud: np.ndarray  # c * (E_t / (s E0))^0.23
    ehs_hw: np.ndarray    # window of the EHS correlation


def _bands() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quarter-Bark bands 80 Hz .. 18 kHz on z = 7 asinh(f / 650) (109 bands, BS.1387-1 Table 6)."""
    zl_all, zu_all = 7.0 * np.arcsinh(80.0 / 650.0), 7.0 * np.arcsinh(18000.0 / 650.0)
    nc = math.ceil((zu_all - zl_all) / DZ)
    zl = zl_all + DZ * np.arange(nc)
    zu = np.minimum(zl + DZ, zu_all)
    zc = 0.5 * (zl + zu)
    return tuple(650.0 * np.sinh(z / 7.0) for z in (zl, zc, zu))


def _spread(e: np.ndarray, t: _Tables | None = None, *, bs: np.ndarray | None = None,
            a_low_e: float | None = None, a_up_c: np.ndarray | None = None) -> np.ndarray:
    """Level-dependent frequency spreading over bands, power-law (0.4) addition, normalised.

    ``e``: (..., B) band energies. Each band's energy is spread with 27 dB/Bark downwards and
    24 + 230 Hz/fc - 0.2 L dB/Bark upwards, each spreading function normalised to unit sum, the
    contributions added in the 0.4 power domain and divided by the response to unit energies.
    """
    if t is not None:
        bs, a_low_e, a_up_c = t.bs, t.a_low_e, t.a_up_c
    nb = e.shape[-1]
    a_low = a_low_e ** (1 / 0.4)
    a_up = a_up_c * e ** (0.2 * DZ)                       # level-dependent upper slope
    a_up = np.minimum(a_up, 1.0 - 1e-12)
    m = np.arange(nb)
    g_low = (1.0 - a_low ** (m + 1)) / (1.0 - a_low)         # sum of the lower skirt
    g_up = (1.0 - a_up ** (nb - m)) / (1.0 - a_up)           # sum of the upper skirt
    en_e = (e / (g_low + g_up - 1.0)) ** 0.4                 # normalised, to the power 0.4
    d = m[None, :] - m[:, None]                              # d[src, tgt] = tgt - src
    lower = np.where(d <= 0, a_low_e ** np.maximum(-d, 0), 0.0)   # (src, tgt) constant
    out = en_e @ lower
    # upper skirt: a_up_e[src] ** (tgt - src) for tgt > src, level dependent per frame
    log_a = (0.4 * np.log(a_up)).reshape(-1, nb)             # (rows, B)
    en_rows = en_e.reshape(-1, nb)
    dpos = np.where(d > 0, d, 0).astype(np.float64)
    upper = np.empty_like(en_rows)
    for i in range(0, en_rows.shape[0], 256):                # chunks bound the (rows, B, B) temp
        up = np.exp(log_a[i:i + 256, :, None] * dpos) * (d > 0)
        upper[i:i + 256] = np.einsum("rs,rst->rt", en_rows[i:i + 256], up)
    out = out + upper.reshape(out.shape)
    return out ** (1 / 0.4) / bs


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    n = np.arange(NF)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / (NF - 1))
    # loudness gain: a full-scale sine at 1019.5 Hz reaches LP dB in its largest DFT bin
    w = NF - 1
    fcn = 1019.5 / FS
    k = int(fcn * NF)
    dfw = min((k + 1) / NF - fcn, fcn - k / NF) * w
    gp = math.sin(math.pi * dfw) / (math.pi * dfw * (1 - dfw * dfw))
    gl = 10 ** (LP / 20) / (gp * AMAX / 4 * w)

    f = np.arange(NF // 2 + 1) * FS / NF
    fk = f / 1000.0
    with np.errstate(divide="ignore"):
        wdb = (-0.6 * 3.64 * fk ** -0.8 + 6.5 * np.exp(-0.6 * (fk - 3.3) ** 2)
               - 1e-3 * fk ** 3.6)
    w2 = np.where(f > 0, 10 ** (wdb / 10), 0.0)

    fl, fc, fu = _bands()
    df = FS / NF
    lo = np.maximum(fl[None, :], (f[:, None] - 0.5 * df))
    hi = np.minimum(fu[None, :], (f[:, None] + 0.5 * df))
    u = np.maximum(hi - lo, 0.0) / df

    nb = fc.size
    a_low_e = (10 ** (-2.7 * DZ)) ** 0.4
    a_up_c = 10 ** ((-2.4 - 23.0 / fc) * DZ)
    bs = _spread(np.ones(nb), bs=np.ones(nb), a_low_e=a_low_e, a_up_c=a_up_c)
    ein = 10 ** (0.4 * 0.364 * (fc / 1000.0) ** -0.8)
    mdb = np.where(np.arange(nb) <= 12 / DZ, 3.0, 0.25 * np.arange(nb) * DZ)
    gm = 10 ** (-mdb / 10)
    et = 10 ** (0.364 * (fc / 1000.0) ** -0.8)
    s = 10 ** ((-2.0 - 2.05 * np.arctan(fc / 4000.0) - 0.75 * np.arctan((fc / 1600.0) ** 2)) / 10)
    ets = 1.07664 * (et / (s * 1e4)) ** 0.23
    nl = 256
    m = np.arange(nl)
    ehs_hw = (1.0 / nl) * math.sqrt(8 / 3) * (0.5 - 0.5 * np.cos(2 * np.pi * m / (nl - 1)))
    return _Tables(hw=gl * hann, w2=w2, u=u, fc=fc, ein=ein, bs=bs, a_low_e=a_low_e,
                   a_up_c=a_up_c, gm=gm, a_tds=_time_constants(fc, 0.030, 0.008),
                   a_adp=_time_constants(fc, 0.050, 0.008), et_loud=et, s_loud=s,
                   ets_loud=ets, ehs_hw=ehs_hw)


# ----------------------------------------------------------------------------- helpers

def _recursive(x: np.ndarray, a: np.ndarray, b: np.ndarray | float, init: float = 0.0) -> np.ndarray:
    """y[n] = a * y[n-1] + b * x[n] along axis -2 (frames), per band (last axis)."""
    y = np.empty_like(x)
    state = np.full(x.shape[:-2] + x.shape[-1:], init, dtype=x.dtype)
    for n in range(x.shape[-2]):
        state = a * state + b * x[..., n, :]
        y[..., n, :] = state
    return y


def _data_boundary(x: np.ndarray) -> tuple[int, int]:
    """First and last sample where 5 consecutive |x| sum over 200 (16-bit scale), any channel."""
    s = np.stack([np.convolve(np.abs(c), np.ones(5), mode="valid") for c in x])
    hit = np.flatnonzero((s > 200.0).any(axis=0))
    if hit.size == 0:
        return 0, 0
    return int(hit[0]), int(hit[-1] + 4)


def _frames(x: np.ndarray, n_frames: int) -> np.ndarray:
    """(C, N) -> (C, F, NF) frames with hop NADV, zero-padded at the end."""
    need = (n_frames - 1) * NADV + NF
    if x.shape[-1] < need:
        x = np.pad(x, ((0, 0), (0, need - x.shape[-1])))
    v = np.lib.stride_tricks.sliding_window_view(x, NF, axis=-1)[:, ::NADV]
    return v[:, :n_frames]


# ----------------------------------------------------------------------------- ear model

@dataclass
class _Patterns:
    x2: np.ndarray    # (C, F, 1025) power spectrum
    xw2: np.ndarray   # outer/middle ear weighted power spectrum
    es: np.ndarray    # (C, F, B) unsmeared excitation (after frequency spreading)
    ehs: np.ndarray   # excitation after time-domain spreading


def _ear_model(frames: np.ndarray, t: _Tables) -> _Patterns:
    x2 = np.abs(np.fft.rfft(frames * t.hw, axis=-1)) ** 2
    xw2 = x2 * t.w2
    eb = np.maximum(xw2 @ t.u, EMIN)
    es = _spread(eb + t.ein, t)
    ef = _recursive(es, t.a_tds, 1.0 - t.a_tds)
    return _Patterns(x2=x2, xw2=xw2, es=es, ehs=np.maximum(ef, es))


def _adapt(ehs_r: np.ndarray, ehs_t: np.ndarray, t: _Tables) -> tuple[np.ndarray, np.ndarray]:
    """Level and pattern adaptation -> spectrally adapted patterns (EP_ref, EP_test)."""
    a, b = t.a_adp, 1.0 - t.a_adp
    p_r = _recursive(ehs_r, a, b)
    p_t = _recursive(ehs_t, a, b)
    levcorr = (np.sqrt(p_t * p_r).sum(-1) / p_t.sum(-1)) ** 2          # (C, F)
    lc = levcorr[..., None]
    el_r = np.where(lc > 1, ehs_r / lc, ehs_r)
    el_t = np.where(lc > 1, ehs_t, ehs_t * lc)
    rn = _recursive(el_t * el_r, a, 1.0)
    rd = _recursive(el_r * el_r, a, 1.0)
    ge = rn >= rd
    r_r = np.where(ge, 1.0, rn / rd)
    r_t = np.where(ge, rd / rn, 1.0)
    nb = ehs_r.shape[-1]
    m = np.arange(nb)
    lo, hi = np.maximum(m - 3, 0), np.minimum(m + 4, nb - 1)

    def band_mean(r: np.ndarray) -> np.ndarray:
        c = np.concatenate([np.zeros(r.shape[:-1] + (1,)), np.cumsum(r, axis=-1)], axis=-1)
        return (c[..., hi + 1] - c[..., lo]) / (hi - lo + 1)

    pc_r = _recursive(band_mean(r_r), a, b)
    pc_t = _recursive(band_mean(r_t), a, b)
    return el_r * pc_r, el_t * pc_t


def _modulation(es: np.ndarray, t: _Tables) -> tuple[np.ndarray, np.ndarray]:
    """Modulation pattern and the smoothed loudness-domain envelope (E^0.3) per band."""
    a, b = t.a_adp, 1.0 - t.a_adp
    ee = es ** 0.3
    prev = np.concatenate([np.zeros_like(ee[..., :1, :]), ee[..., :-1, :]], axis=-2)
    de = _recursive(FSS * np.abs(ee - prev), a, b)
    eavg = _recursive(ee, a, b)
    return de / (1.0 + eavg / 0.3), eavg


def _loudness(ehs: np.ndarray, t: _Tables) -> np.ndarray:
    """Total loudness (sone) per frame."""
    n = t.ets_loud * ((1.0 - t.s_loud + t.s_loud * ehs / t.et_loud) ** 0.23 - 1.0)
    return 24.0 / ehs.shape[-1] * np.maximum(n, 0.0).sum(-1)


# ----------------------------------------------------------------------------- MOVs per frame

def _bandwidth(x2r: np.ndarray, x2t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame bandwidths (bins) of reference and test; -1 where not found."""
    kx, kl = 921, 346
    thr = x2t[..., kx:NF // 2].max(-1, keepdims=True)
    hit_r = x2r[..., kl:kx] >= 10 ** 1.0 * thr                        # bins kl .. kx-1
    last_r = kx - 1 - np.argmax(hit_r[..., ::-1], axis=-1)
    bw_r = np.where(hit_r.any(-1), last_r + 1, -1)
    k = np.arange(kx)
    hit_t = (x2t[..., :kx] >= 10 ** 0.5 * thr) & (k < bw_r[..., None])
    last_t = kx - 1 - np.argmax(hit_t[..., ::-1], axis=-1)
    bw_t = np.where(hit_t.any(-1), last_t + 1, -1)
    return bw_r, bw_t


def _ehs(frames_r: np.ndarray, frames_t: np.ndarray, x2r: np.ndarray, x2t: np.ndarray,
         t: _Tables) -> np.ndarray:
    """Error harmonic structure per frame; -1 marks frames below the energy threshold."""
    nl = m = 256
    kst = 1
    kmax = kst + nl - 1 + m
    en_r = (frames_r[..., NADV:] ** 2).sum(-1)
    en_t = (frames_t[..., NADV:] ** 2).sum(-1)
    valid = (en_r >= 8000.0) | (en_t >= 8000.0)
    tiny = 1e-30
    d = np.log((x2t[..., :kmax] + tiny) / (x2r[..., :kmax] + tiny))
    nfft = 1024
    d0 = np.fft.rfft(d[..., :m], nfft)
    d1 = np.fft.rfft(d, nfft)
    c = np.fft.irfft(np.conj(d0) * d1, nfft)[..., :kst + nl]
    csq = np.concatenate([np.zeros(d.shape[:-1] + (1,)), np.cumsum(d * d, axis=-1)], axis=-1)
    lags = np.arange(kst + nl)
    sj = csq[..., lags + m] - csq[..., lags]
    den = c[..., :1] * sj
    with np.errstate(invalid="ignore", divide="ignore"):
        cn = np.where(den > 0, c / np.sqrt(np.where(den > 0, den, 1.0)), 1.0)
    cm = cn[..., kst:kst + nl]
    cw = (cm - cm.mean(-1, keepdims=True)) * t.ehs_hw
    c2 = np.abs(np.fft.rfft(cw, nl, axis=-1)) ** 2                   # NL/2 + 1 values
    rising = c2[..., 1:] > c2[..., :1]
    peak = np.where(rising, c2[..., 1:], 0.0).max(-1)
    return np.where(valid, peak, -1.0)


def _detection(ehs_r: np.ndarray, ehs_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binaural probability of detection and number of steps above threshold per frame."""
    er = 10 * np.log10(ehs_r)
    et = 10 * np.log10(ehs_t)
    lev = 0.3 * np.maximum(er, et) + 0.7 * et
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lpos = np.where(lev > 0, lev, 1.0)
        s = (5.95072 * (6.39468 / lpos) ** 1.71332 + 9.01033e-11 * lpos ** 4
             + 5.05622e-6 * lpos ** 3 - 0.00102438 * lpos ** 2 + 0.0550197 * lpos - 0.198719)
        s = np.where(lev > 0, s, 1e30)
        e = er - et
        b = np.where(er > et, 4.0, 6.0)
        p = 1.0 - 0.5 ** ((np.abs(e) / s) ** b)
        q = np.abs(np.trunc(e)) / s
    p_bin, q_bin = p.max(0), q.max(0)                                # max over channels
    return 1.0 - np.prod(1.0 - p_bin, axis=-1), q_bin.sum(-1)


# ----------------------------------------------------------------------------- driver

def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[None, :] if x.ndim == 1 else x


def peaq_movs(ref: np.ndarray, deg: np.ndarray, sr: int) -> dict[str, float]:
    """The 11 MOVs of PEAQ Basic for time-aligned (C, N) float signals in [-1, 1] at ``sr``.

    Signals at other rates are resampled to 48 kHz (soxr); a longer signal is cut to the shorter.
    """
    ref, deg = _as_2d(ref), _as_2d(deg)
    if ref.shape[0] != deg.shape[0]:
        from deepaq.audio import AudioError
        raise AudioError(None, f"PEAQ needs the same channel count, got {ref.shape[0]} (reference)"
                         f" and {deg.shape[0]} (degraded)")
    if sr != FS:
        from deepaq.audio import resample
        ref = np.asarray(resample(ref.astype(np.float32), sr, FS), dtype=np.float64)
        deg = np.asarray(resample(deg.astype(np.float32), sr, FS), dtype=np.float64)
    n = min(ref.shape[-1], deg.shape[-1])
    ref, deg = ref[:, :n] * AMAX, deg[:, :n] * AMAX
    t = _tables()

    lim0, lim1 = _data_boundary(ref)
    fstart = lim0 // NADV
    fend = max(fstart, (lim1 + 1 - NADV) // NADV)
    nfr = fend + 1
    fr_r, fr_t = _frames(ref, nfr), _frames(deg, nfr)
    pr, pt = _ear_model(fr_r, t), _ear_model(fr_t, t)
    ep_r, ep_t = _adapt(pr.ehs, pt.ehs, t)
    mod_r, eavg_r = _modulation(pr.es, t)
    mod_t, _ = _modulation(pt.es, t)
    sl = slice(fstart, nfr)                                          # frames inside the boundary
    np_ = nfr - fstart

    # modulation differences
    diff = np.abs(mod_t - mod_r)[..., sl, :]
    mr = mod_r[..., sl, :]
    nb = diff.shape[-1]
    md1 = 100.0 / nb * (diff / (1.0 + mr)).sum(-1)
    w2 = np.where(mod_t[..., sl, :] >= mr, 1.0, 0.1)
    md2 = 100.0 / nb * (w2 * diff / (0.01 + mr)).sum(-1)
    ea = eavg_r[..., sl, :]
    wt = (ea / (ea + 100.0 * t.ein ** 0.3)).sum(-1)
    ndel = max(0, math.ceil(0.5 * FSS) - fstart)
    win, avg1, avg2 = [], [], []
    for c in range(md1.shape[0]):
        v1, v2, w = md1[c, ndel:], md2[c, ndel:], wt[c, ndel:]
        if v1.size >= 4:
            sq = np.sqrt(v1)
            wm = np.convolve(sq, np.ones(4) / 4, mode="valid")
            win.append(float(np.sqrt(np.mean(wm ** 4))))
        else:
            win.append(0.0)
        avg1.append(float((w * v1).sum() / w.sum()) if w.sum() > 0 else 0.0)
        avg2.append(float((w * v2).sum() / w.sum()) if w.sum() > 0 else 0.0)

    # noise loudness, from 50 ms after both signals are louder than 0.1 sone
    sref = 0.15 * mod_r + 0.5
    stest = 0.15 * mod_t + 0.5
    beta = np.exp(-1.5 * (ep_t - ep_r) / ep_r)
    num = np.maximum(stest * ep_t - sref * ep_r, 0.0)
    nl = (t.ein / stest) ** 0.23 * ((1.0 + num / (t.ein + sref * ep_r * beta)) ** 0.23 - 1.0)
    nl = np.maximum(24.0 / nb * nl.sum(-1), 0.0)[..., sl]
    loud_r, loud_t = _loudness(pr.ehs[..., sl, :], t), _loudness(pt.ehs[..., sl, :], t)
    loud_ok = np.flatnonzero(((loud_r > 0.1) & (loud_t > 0.1)).any(0))
    nloud = int(loud_ok[0]) if loud_ok.size else np_
    ndel_nl = max(nloud + math.ceil(0.05 * FSS), ndel)
    rms_nl = [float(np.sqrt(np.mean(v[ndel_nl:] ** 2))) if v[ndel_nl:].size else 0.0 for v in nl]

    # bandwidth
    bw_r, bw_t = _bandwidth(pr.x2[..., sl, :], pt.x2[..., sl, :])
    bwr, bwt = [], []
    for c in range(bw_r.shape[0]):
        ok = bw_r[c] > 346
        bwr.append(float(bw_r[c][ok].mean()) if ok.any() else 0.0)
        bwt.append(float(bw_t[c][ok].mean()) if ok.any() else 0.0)

    # noise-to-mask ratio: noise = (|Xw_ref| - |Xw_test|)^2 grouped, mask = E_ref / g_m
    xwn2 = (np.sqrt(pr.xw2[..., sl, :]) - np.sqrt(pt.xw2[..., sl, :])) ** 2
    ebn = np.maximum(xwn2 @ t.u, EMIN)
    nmr = ebn / (t.gm * pr.ehs[..., sl, :])
    nmr_avg, nmr_max = nmr.mean(-1), nmr.max(-1)
    total_nmr = float(np.mean(10 * np.log10(nmr_avg.mean(-1))))
    rel_dist = float(np.mean((nmr_max > 10 ** 0.15).mean(-1)))

    # probability of detection (binaural)
    p, q = _detection(pr.ehs[..., sl, :], pt.ehs[..., sl, :])
    det = p > 0.5
    nd, qsum = int(det.sum()), float(q[det].sum())
    adb = 0.0 if nd == 0 else (math.log10(qsum / nd) if qsum > 0 else -0.5)
    pf, mfpd = 0.0, 0.0
    for v in p:
        pf = 0.9 * pf + 0.1 * float(v)
        mfpd = max(mfpd, pf)

    # error harmonic structure
    ehs = _ehs(fr_r[..., sl, :], fr_t[..., sl, :], pr.x2[..., sl, :], pt.x2[..., sl, :], t)
    ehs_c = [float(v[v >= 0].mean()) if (v >= 0).any() else 0.0 for v in ehs]

    values = (np.mean(bwr), np.mean(bwt), total_nmr, np.mean(win), adb, 1000.0 * np.mean(ehs_c),
              np.mean(avg1), np.mean(avg2), np.mean(rms_nl), mfpd, rel_dist)
    return {name: float(v) for name, v in zip(MOV_NAMES, values)}


def peaq_basic(ref: np.ndarray, deg: np.ndarray, sr: int) -> dict[str, float]:
    """ODG, DI and the 11 MOVs of PEAQ Basic (see module docstring for the interpretations)."""
    movs = peaq_movs(ref, deg, sr)
    di = movs_to_di(movs)
    return {"odg": di_to_odg(di), "di": di, **movs}


class PEAQMetric(Metric):
    """Registry wrapper: ``score`` returns {"score": ODG, "odg", "di", and every MOV by name}."""

    info = MetricInfo(
        name="peaq_odg", needs_reference=True, higher_is_better=True, sample_rate=FS, extra=None,
        description="PEAQ Basic (ITU-R BS.1387-1) objective difference grade, 0 .. -4, "
                    "with its 11 model output variables",
    )

    def score(self, ref: np.ndarray | None, deg: np.ndarray, sr: int) -> dict[str, float]:
        if ref is None:
            raise ValueError("PEAQ needs a reference signal")
        out = peaq_basic(ref, deg, sr)
        return {"score": out["odg"], **out}
