"""A ViSQOL-style gammatone band spectrogram, computed through an STFT, as a parameter-free backbone.

Why: the corpus labels are ViSQOL v3 scores, and ViSQOL compares *gammatone band spectrograms*
(32 ERB-spaced bands from 50 Hz to Nyquist, 80 ms Hann frames, 20 ms hop, 10 log10 of each band's
RMS amplitude, floored at -45 and at each frame's peak - 45). A model that compares the same kind
of representation, with learned weights on top, inherits ViSQOL's behaviour on real recordings from
very little training music, where a CNN trained from scratch on rendered music does not (see the
model card of checkpoints/deepaq-small).

ViSQOL runs four cascaded IIR filters per band over every frame (in visqol-python these builds were
66 % of a 7 s pair's 1.76 s, profiled with cProfile); here each band's energy is read off one STFT through the 4th-order gammatone's
power response |H(f)|^2 = (1 + ((f - cf) / b)^2)^-4, b = 1.019 ERB(cf): a matrix product, batched,
differentiable. The floors are applied per clip (ViSQOL applies the per-frame floor to the pair
jointly), so each clip has an embedding of its own; the result is shifted so the floor reads 0.

Several resolutions can be stacked (``windows``/``bands``): each is one hidden state, all share
``hop_length`` and are centred on the same instants (the longest window decides how many frames a
clip has), so frame ``t`` of every hidden state describes the same moment.

``level_dbfs`` (optional) first scales each clip to that RMS level (over its valid samples):
the global level alignment ViSQOL does before comparing, per clip so that each clip keeps an
embedding of its own. A gain change of the whole file then leaves the embedding unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from deepaq.backbones import register_backbone, wave_and_lengths

EAR_Q, MIN_BW = 9.26449, 24.7          # Glasberg & Moore ERB, as in ViSQOL's filter bank


def erb_center_frequencies(f_min: float, f_max: float, n_bands: int) -> np.ndarray:
    """ERB-spaced centre frequencies from ``f_min`` to ``f_max`` (ascending), as ViSQOL spaces them."""
    c = EAR_Q * MIN_BW
    steps = np.arange(1, n_bands + 1) * (np.log(f_min + c) - np.log(f_max + c)) / n_bands
    return np.sort(-c + np.exp(steps) * (f_max + c))


def gammatone_power_weights(sample_rate: int, n_fft: int, n_bands: int, f_min: float,
                            f_max: float) -> np.ndarray:
    """[n_fft // 2 + 1, n_bands]: each STFT bin's power gain through each 4th-order gammatone."""
    cf = erb_center_frequencies(f_min, f_max, n_bands)
    bandwidth = 1.019 * (cf / EAR_Q + MIN_BW)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    return ((1.0 + ((freqs[:, None] - cf[None, :]) / bandwidth[None, :]) ** 2) ** -4.0)


class GammatoneBands(nn.Module):
    """[B, T] waveform -> [B, F, n_bands] band levels (ViSQOL dB, floor at 0); no parameters.

    Frame ``f`` covers samples ``[f * hop + offset, f * hop + offset + window)``; ``offset`` centres
    a shorter window on a longer one's frames when resolutions are stacked. The FFT is the next
    power of two (the window is zero-padded at its end: same frames, 1.6x faster for 3840).
    """

    def __init__(self, sample_rate: int, window: int, hop_length: int, n_bands: int,
                 f_min: float, f_max: float, floor_db: float, range_db: float, offset: int = 0):
        super().__init__()
        self.win_length, self.hop_length, self.offset = int(window), int(hop_length), int(offset)
        self.n_fft = 1 << (self.win_length - 1).bit_length()
        self.floor_db, self.range_db = float(floor_db), float(range_db)
        # ViSQOL's symmetric Hann (0.5 - 0.5 cos(2 pi n / (N - 1))), zero-padded to the FFT size
        hann = torch.hann_window(self.win_length, periodic=False)
        self.register_buffer("window", torch.nn.functional.pad(hann, (0, self.n_fft - self.win_length)),
                             persistent=False)
        weights = gammatone_power_weights(sample_rate, self.n_fft, n_bands, f_min, f_max)
        # mean square of the filtered, windowed frame (Parseval): 2 sum |X H|^2 / (n_fft * window)
        self.register_buffer("weights", torch.from_numpy(
            (weights * 2.0 / (self.n_fft * self.win_length)).astype(np.float32)), persistent=False)

    def forward(self, wave: Tensor, frames: int) -> Tensor:
        x = wave[:, self.offset:self.offset + (frames - 1) * self.hop_length + self.win_length]
        x = torch.nn.functional.pad(x.float(), (0, self.n_fft - self.win_length))
        spec = torch.stft(x, self.n_fft, self.hop_length, window=self.window,
                          center=False, return_complex=True)[..., :frames]
        power = torch.einsum("bkf,kn->bfn", spec.real ** 2 + spec.imag ** 2, self.weights)
        level = 5.0 * torch.log10(power.clamp(min=1e-30))       # 10 log10(RMS amplitude)
        level = level.clamp(min=self.floor_db)
        level = torch.maximum(level, level.amax(-1, keepdim=True) - self.range_db)
        return level - self.floor_db


def normalise_level(wave: Tensor, lengths: Tensor, level_dbfs: float) -> Tensor:
    """Scale each clip of [B, T] so the RMS of its first ``lengths[b]`` samples is ``level_dbfs``.

    Digital silence stays silent (no gain)."""
    samples = torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]
    mask = samples.to(wave.dtype)
    power = (wave.float() ** 2 * mask).sum(1) / lengths.clamp(min=1).to(torch.float32)
    target = 10.0 ** (level_dbfs / 10.0)
    gain = torch.where(power > 1e-20, (target / power.clamp(min=1e-20)).sqrt(),
                       torch.ones_like(power))
    return wave * gain[:, None].to(wave.dtype)


class GammatoneSpectrogram(nn.Module):
    """Backbone: one ViSQOL-style band spectrogram per resolution; each is a hidden state.

    Args:
        sample_rate: input rate (48 kHz: ViSQOL's audio mode, and the codecs' cut-offs).
        windows: STFT window per resolution, samples (3840 = ViSQOL's 80 ms at 48 kHz).
        bands: ERB bands per resolution (32 = ViSQOL's audio mode).
        hop_length: frame hop shared by every resolution (960 = ViSQOL's 20 ms).
        f_min, f_max: band centre range (Hz); ``f_max`` None = Nyquist.
        floor_db, range_db: absolute floor and floor below each frame's peak (ViSQOL: -45, 45).
        level_dbfs: scale each clip to this RMS level (dBFS) first; None = as given.
    """

    def __init__(self, sample_rate: int = 48000, windows: list[int] | tuple[int, ...] = (3840,),
                 bands: list[int] | tuple[int, ...] = (32,), hop_length: int = 960,
                 f_min: float = 50.0, f_max: float | None = None, floor_db: float = -45.0,
                 range_db: float = 45.0, level_dbfs: float | None = None):
        super().__init__()
        windows, bands = [int(w) for w in windows], [int(b) for b in bands]
        if not windows or len(windows) != len(bands):
            raise ValueError(f"windows and bands must be equally long lists, got {windows}, {bands}")
        self.sample_rate = int(sample_rate)
        self.hop_length = int(hop_length)
        self.max_window = max(windows)
        f_max = float(f_max or sample_rate / 2)
        self.resolutions = nn.ModuleList(
            GammatoneBands(sample_rate, w, hop_length, b, f_min, f_max, floor_db, range_db,
                           offset=(self.max_window - w) // 2)
            for w, b in zip(windows, bands))
        self.hidden_sizes = bands
        self.num_layers_out = len(bands)
        self.hidden_size = bands[-1]
        self.pretrained_path = None
        self.level_dbfs = None if level_dbfs is None else float(level_dbfs)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        return torch.clamp(torch.div(lengths - self.max_window, self.hop_length,
                                     rounding_mode="floor") + 1, min=0).to(torch.long)

    def freeze_feature_encoder(self) -> None:
        """Nothing to freeze: the front end has no parameters."""

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        wave, lengths = wave_and_lengths(wave, lengths)
        frames = self.frame_lengths(lengths)
        if bool((frames < 1).any()):
            raise ValueError(f"clip too short for a {self.max_window}-sample window: "
                             f"{int(lengths.min())} samples")
        count = int(frames.max())
        if self.level_dbfs is not None:
            wave = normalise_level(wave, lengths, self.level_dbfs)
        valid = (torch.arange(count, device=wave.device)[None, :] < frames[:, None])[..., None]
        hidden = [res(wave, count) * valid.to(wave.dtype) for res in self.resolutions]
        return hidden, frames


@register_backbone("gammatone")
def build_gammatone(**kwargs) -> GammatoneSpectrogram:
    """``backbone_args`` map one-to-one onto ``GammatoneSpectrogram``'s constructor."""
    return GammatoneSpectrogram(**kwargs)
