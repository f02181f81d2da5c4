"""Per-band comparison features between a reference and a degraded band spectrogram, and a head.

Why: a weighted mean of band NSIMs has one number per band, so it cannot tell *added* energy
(noise, interference, reverberation) from *lost* energy (band-limiting, spectral holes, masking
artefacts), which listeners judge differently, nor a constant offset from a fluctuating one.
Several comparisons per band, each exactly 0 for identical inputs, give a small learned head
that room:

- ``nsim``: 1 - ViSQOL's NSIM (``deepaq.nsim``): structure and intensity under a 3 x 3 window;
- ``abs_diff``: mean |D - R| in dB (a band's log-spectral distance);
- ``deficit``: mean max(R - D, 0): energy lost;
- ``excess``: mean max(D - R, 0): energy added;
- ``modulation``: mean |dD/dt - dR/dt|: change of the band envelope's frame-to-frame movement
  (smearing, pre-echo, packet gaps).

Inputs are band levels in dB above the floor (the ``gammatone`` backbone's), [B, F, C], with the
valid frames [B, F]; the output is [B, K, C] for the K chosen features. ``ComparisonHead`` maps
them to one distance per item, monotone in every feature, >= 0 and exactly 0 when every feature
is 0 (identical input).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepaq.nsim import channel_nsim

FEATURES = ("nsim", "abs_diff", "deficit", "excess", "modulation")
#: dB features are divided by this so that all features start on a similar scale (1 - NSIM <= ~1)
DB_SCALE = 10.0


def _frame_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean over valid frames: x [B, F, C], valid [B, F] -> [B, C]."""
    w = valid.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp(min=1)


def check_features(features: list[str] | tuple) -> None:
    """Raise ValueError unless ``features`` is a non-empty list of names from :data:`FEATURES`
    (a model checks its list once, at construction)."""
    unknown = sorted(set(features) - set(FEATURES))
    if unknown or not features:
        raise ValueError(f"comparison must be a non-empty list of {FEATURES}, got {features}; "
                         f"unknown: {unknown}")


def comparison_features(ref: Tensor, deg: Tensor, valid: Tensor, features: list[str] | tuple,
                        blocks: list[int] | None = None) -> Tensor:
    """[B, K, C] per-band comparison features (see the module docstring), 0 for identical input.
    ``features``: names from :data:`FEATURES` (see :func:`check_features`)."""
    diff = (deg - ref) / DB_SCALE
    out = []
    for name in features:
        if name == "nsim":
            out.append(1.0 - channel_nsim(ref, deg, valid, blocks))
        elif name == "abs_diff":
            out.append(_frame_mean(diff.abs(), valid))
        elif name == "deficit":
            out.append(_frame_mean((-diff).clamp(min=0), valid))
        elif name == "excess":
            out.append(_frame_mean(diff.clamp(min=0), valid))
        elif name == "modulation":   # frame-to-frame change, over pairs of valid frames
            both = valid[:, 1:] & valid[:, :-1]
            out.append(_frame_mean((diff[:, 1:] - diff[:, :-1]).abs(), both))
        else:
            check_features(features)
    return torch.stack(out, 1)


class ComparisonHead(nn.Module):
    """[B, K, C] features -> [B] distance, monotone: more of any feature never lowers it.

    d(x) = sum_i a_i x_i + sum_h v_h (ReLU(w_h . x + b_h) - ReLU(b_h)), with a, v, w >= 0
    (softplus of the parameters). The features are >= 0, so d >= 0, d(0) = 0 exactly (identical
    files), and d is non-decreasing in every feature: a degradation the training never showed
    cannot be scored as better than the reference, which a free MLP can do (its ReLUs may all
    be off on new inputs). The hidden units with negative biases are thresholds: damage counts
    only beyond a level. ``hidden`` = 0 keeps only the linear part (band weights).
    """

    def __init__(self, num_features: int, num_bands: int, hidden: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        width = num_features * num_bands
        self.linear = nn.Parameter(torch.zeros(width))
        self.first = nn.Parameter(torch.randn(hidden, width, generator=g) - 2.0)
        self.bias = nn.Parameter(-0.1 * torch.rand(hidden, generator=g))
        self.out_weights = nn.Parameter(torch.zeros(hidden))

    def forward(self, features: Tensor) -> Tensor:
        x = features.flatten(1).to(self.first.dtype)
        width = x.shape[1]
        softplus = nn.functional.softplus
        d = x @ softplus(self.linear) / width
        if self.first.shape[0]:
            w = softplus(self.first) / width
            units = torch.relu(x @ w.T + self.bias) - torch.relu(self.bias)
            d = d + units @ softplus(self.out_weights)
        return d
