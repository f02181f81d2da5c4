"""A full-band 48 kHz log-mel front end and a small CNN over it, as a backbone.

Why: codecs are told apart mostly by what they do above 12 kHz (low-pass cutoffs, spectral holes),
which a 24 kHz waveform model like MERT cannot see. A log-mel spectrogram over the full band (128 mel
bins, STFT 2048 / hop 512 at 48 kHz, ~94 frames/s) keeps those cues, and a few 2-D conv blocks on it
train within minutes on a CPU. The CNN returns one hidden state per block, [B, F, C * mels'], plus
(``include_logmel``) the scaled log-mel itself as hidden state 0, so the same pooling/head code as for
MERT applies and a head can learn a residual on top of the plain log-mel distance.

Padding is exact: the STFT is not centred (a frame never reads past the clip) and padded frames are
zeroed before every time convolution, so a padded clip gives the same valid frames as alone.

``log_mel_spectrogram`` exposes the plain features (dB) for the log-mel L1 baseline.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from deepaq.backbones import register_backbone, wave_and_lengths


def mel_filters(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                f_max: float | None = None) -> Tensor:
    """Mel filter bank [n_fft // 2 + 1, n_mels], Slaney mel scale, triangles of peak 1 (band energy)."""
    from deepaq.mel import mel_filter_bank

    fb = mel_filter_bank(n_fft // 2 + 1, n_mels, f_min, f_max or sample_rate / 2, sample_rate,
                         norm=None)
    return torch.from_numpy(np.asarray(fb, dtype=np.float32))


class LogMel(nn.Module):
    """Power mel spectrogram in dB, [B, T] -> [B, frames, n_mels]; frames = 1 + (T - n_fft) // hop.

    Each mel band sums the power of its bins (triangles of peak 1), normalised by the window so a
    full-scale sine reads -3 dB (its mean square); values are floored at ``floor_db`` (-120 dB:
    real music on the shared references still has -105 dB bands above 18 kHz, and a codec's
    low-pass leaves -170 dB there, so the floor must sit in between). No parameters (filters and window are non-persistent buffers).
    """

    def __init__(self, sample_rate: int = 48000, n_fft: int = 2048, hop_length: int = 512,
                 n_mels: int = 128, f_min: float = 0.0, f_max: float | None = None,
                 floor_db: float = -120.0):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.floor_db = float(floor_db)
        window = torch.hann_window(n_fft, periodic=True)
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("filters", mel_filters(sample_rate, n_fft, n_mels, f_min, f_max),
                             persistent=False)
        self.power_scale = float(2.0 / window.sum() ** 2)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        return torch.clamp(torch.div(lengths - self.n_fft, self.hop_length, rounding_mode="floor") + 1,
                           min=0).to(torch.long)

    def forward(self, wave: Tensor) -> Tensor:
        if wave.shape[-1] < self.n_fft:
            raise ValueError(f"clip too short for log-mel: {wave.shape[-1]} < n_fft={self.n_fft} samples")
        spec = torch.stft(wave.float(), self.n_fft, self.hop_length, window=self.window,
                          center=False, return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2                      # [B, n_freq, F]
        mel = torch.einsum("bkf,km->bfm", power, self.filters) * self.power_scale
        floor = 10.0 ** (self.floor_db / 10.0)
        return 10.0 * torch.log10(torch.clamp(mel, min=floor))


def log_mel_spectrogram(x: np.ndarray, sample_rate: int = 48000, n_fft: int = 2048,
                        hop_length: int = 512, n_mels: int = 128) -> np.ndarray:
    """Plain log-mel features of a (C, N) or (N,) float array: (C, frames, n_mels) dB, float32."""
    arr = np.asarray(x, dtype=np.float32)
    squeeze = arr.ndim == 1
    wave = torch.from_numpy(np.atleast_2d(arr).copy())
    with torch.no_grad():
        out = LogMel(sample_rate, n_fft, hop_length, n_mels)(wave).numpy()
    return out[0] if squeeze else out


class _ChannelNorm(nn.Module):
    """LayerNorm over channels only, at each (mel, frame): padding-safe (no statistics over time)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:                          # [B, C, M, F]
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel_size: int, freq_pool: int, norm: bool):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2)
        self.norm = _ChannelNorm(c_out) if norm else nn.Identity()
        self.act = nn.GELU()
        self.pool = nn.AvgPool2d((freq_pool, 1)) if freq_pool > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class _CNN(nn.Module):
    def __init__(self, channels: list[int], kernel_size: int, freq_pool: int, norm: bool):
        super().__init__()
        ins = [1, *channels[:-1]]
        self.blocks = nn.ModuleList(_ConvBlock(a, b, kernel_size, freq_pool, norm)
                                    for a, b in zip(ins, channels))

    def forward(self, x: Tensor, frame_mask: Tensor) -> list[Tensor]:
        """x [B, 1, M, F] -> per block [B, F, C * M']; padded frames zeroed before each conv."""
        keep = frame_mask[:, None, None, :].to(x.dtype)
        outs = []
        for block in self.blocks:
            x = block(x * keep)
            b, c, m, f = x.shape
            outs.append(x.permute(0, 3, 1, 2).reshape(b, f, c * m))
        return outs


class LogMelCNN(nn.Module):
    """Backbone: log-mel (dB, scaled) -> conv blocks halving the mel axis; hidden states per block.

    Defaults (channels 8, 16, 32, 64 doubling as the mel axis halves) give hidden sizes
    [128 (log-mel), 512, 512, 512, 512], ~25 k conv parameters, ~0.25 GMAC per 5 s clip.
    """

    def __init__(self, sample_rate: int = 48000, n_fft: int = 2048, hop_length: int = 512,
                 n_mels: int = 128, channels: list[int] | tuple[int, ...] = (8, 16, 32, 64),
                 kernel_size: int = 3, freq_pool: int = 2, norm: bool = True,
                 include_logmel: bool = True, db_offset: float = -60.0, db_scale: float = 20.0):
        super().__init__()
        self.logmel = LogMel(sample_rate, n_fft, hop_length, n_mels)
        self.model = _CNN(list(channels), kernel_size, freq_pool, norm)  # LoRA would wrap this
        self.sample_rate = int(sample_rate)
        self.include_logmel = bool(include_logmel)
        self.db_offset, self.db_scale = float(db_offset), float(db_scale)
        self.pretrained_path = None
        sizes, mels = [], n_mels
        for c in channels:
            mels = mels // freq_pool if freq_pool > 1 else mels
            if mels < 1:
                raise ValueError(f"too many freq_pool steps for {n_mels} mel bins")
            sizes.append(int(c) * mels)
        self.hidden_sizes = ([n_mels] if include_logmel else []) + sizes
        self.num_layers_out = len(self.hidden_sizes)
        self.hidden_size = self.hidden_sizes[-1]

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        return self.logmel.frame_lengths(lengths)

    def freeze_feature_encoder(self) -> None:
        """Nothing to freeze: the log-mel front end has no parameters."""

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        wave, lengths = wave_and_lengths(wave, lengths)
        frames = self.frame_lengths(lengths)
        if bool((frames < 1).any()):
            raise ValueError(f"clip too short for log-mel: {int(lengths.min())} samples")
        feats = (self.logmel(wave) - self.db_offset) / self.db_scale      # [B, F, M]
        frame_mask = torch.arange(feats.shape[1], device=wave.device)[None, :] < frames[:, None]
        hidden = self.model(feats.transpose(1, 2)[:, None], frame_mask)
        if self.include_logmel:
            hidden = [feats * frame_mask[..., None].to(feats.dtype), *hidden]
        return hidden, frames


@register_backbone("logmel_cnn")
def build_logmel_cnn(**kwargs) -> LogMelCNN:
    """``backbone_args`` map one-to-one onto ``LogMelCNN``'s constructor."""
    return LogMelCNN(**kwargs)
