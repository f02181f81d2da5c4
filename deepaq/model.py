"""QualityModel: backbone hidden states -> pooled (or per-frame) quality embedding; metric = distance.

DeePAQ's model: MERT's 13 hidden states, each mean-pooled over time, concatenated (13 x 768 = 9984)
-> ReLU -> Linear(256); LoRA adapters (peft) on the backbone's attention projections, the head
trained fully. The distance between the embeddings of a reference and a degraded clip is the
quality metric. The constructor arguments are the YAML recipe's ``model:`` mapping one-to-one, and
``config()`` gives them back, so a checkpoint can rebuild the architecture from data.

``pooling="frame"`` keeps time: each frame's concatenated hidden states go through the same
ReLU -> Linear, giving [B, F, D] with padded frames set to exactly zero; ``distance`` is then the
mean over valid frames of the per-frame L2 distance (a frame-level comparison, closer to what a
full-reference metric does than comparing two time averages).

``distance="nsim"`` (frame pooling) compares the two frame sequences channel by channel with
ViSQOL's NSIM (``deepaq.nsim``) and weighs each channel's dissimilarity 1 - NSIM_c with a learned
non-negative weight: d = sum_c softplus(w_c) (1 - NSIM_c) / sum_c softplus(w_c). With ``head="none"``
the embedding is the chosen hidden states themselves (no ReLU/Linear), which keeps a band
spectrogram backbone's channels in frequency order, as NSIM's window needs.

``distance="compare"`` (frame pooling, ``head="none"``) computes several per-band comparison
features at once (``comparison``: NSIM, log-spectral difference, level deficit and excess, envelope
modulation; ``deepaq.band_compare``) and maps them with a small learned head
(``ComparisonHead``, ``compare_hidden`` units) to a distance that is >= 0 and exactly 0 for
identical inputs. ``comparison_features`` gives the head's input, so a trainer can cache it.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import Tensor, nn

from deepaq.backbones import build_backbone
from deepaq.band_compare import FEATURES, ComparisonHead, check_features, comparison_features

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "frame")
HEADS = ("linear", "none")
DISTANCES = ("l2", "nsim", "compare")
LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}
DEFAULT_LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}


def _yamlable(value: Any) -> Any:
    """Tuples -> lists, recursively, so ``config()`` round-trips through ``yaml.safe_dump``."""
    if isinstance(value, dict):
        return {k: _yamlable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yamlable(v) for v in value]
    return value


def masked_mean(x: Tensor, frame_lengths: Tensor) -> Tensor:
    """Mean over the first ``frame_lengths[b]`` frames of x [B, F, H] -> [B, H]."""
    mask = torch.arange(x.shape[1], device=x.device)[None, :] < frame_lengths[:, None]
    mask = mask[..., None].to(x.dtype)
    return (x * mask).sum(1) / frame_lengths.clamp(min=1)[:, None].to(x.dtype)


class QualityModel(nn.Module):
    """Backbone (registry name + args) -> layer selection -> pooling -> ReLU -> Linear(embed_dim).

    Args:
        backbone: registry name (``deepaq.backbones.available_backbones()``): "mert", "logmel_cnn".
        backbone_args: the backbone builder's keyword arguments (e.g. ``{pretrained: PATH}``).
        layers: indices of the hidden states to use (negative allowed); default all.
        embed_dim: output embedding size.
        pooling: "mean" (masked time mean per hidden state, [B, D]) or "frame" ([B, F, D]).
        lora: ``{r, alpha, dropout, target_modules}`` (missing keys take DeePAQ's 8/16/0.05/
            [q_proj, v_proj]) to train LoRA adapters instead of the backbone; None = no LoRA.
        freeze_feature_encoder: freeze MERT's conv waveform encoder (default; no effect for
            backbones without one). False with LoRA trains the conv encoder fully too.
        gradient_checkpointing: trade compute for activation memory in the backbone.
        freeze_backbone: train the head only (a linear probe): every backbone parameter, adapters
            included, is frozen.
        head: "linear" (ReLU -> Linear(embed_dim), DeePAQ's) or "none" (the hidden states are the
            embedding; ``embed_dim`` must then be None or their total width).
        distance: "l2", "nsim" (per-channel NSIM with learned channel weights; frame pooling) or
            "compare" (per-band comparison features + a learned head; frame pooling, head "none").
        comparison: the features of ``distance="compare"`` (default all of
            ``deepaq.band_compare.FEATURES``).
        compare_hidden: hidden units of the comparison head (0: band weights only).
    """

    def __init__(self, backbone: str = "mert", backbone_args: dict | None = None,
                 layers: list[int] | None = None, embed_dim: int = 256, pooling: str = "mean",
                 lora: dict | None = None, freeze_feature_encoder: bool = True,
                 gradient_checkpointing: bool = False, freeze_backbone: bool = False,
                 head: str = "linear", distance: str = "l2",
                 comparison: list[str] | None = None, compare_hidden: int = 16):
        super().__init__()
        for name, value, allowed in (("pooling", pooling, POOLINGS), ("head", head, HEADS),
                                     ("distance", distance, DISTANCES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if distance in ("nsim", "compare") and pooling != "frame":
            raise ValueError(f"distance={distance!r} compares frame sequences: it needs "
                             "pooling='frame'")
        if distance == "compare" and head != "none":
            raise ValueError("distance='compare' compares band levels: it needs head='none'")
        if comparison is not None and distance != "compare":
            raise ValueError("comparison is an option of distance='compare'")
        comparison = list(FEATURES if comparison is None else comparison)
        self._config = _yamlable({
            "backbone": backbone, "backbone_args": copy.deepcopy(dict(backbone_args or {})),
            "layers": None if layers is None else [int(i) for i in layers],
            "embed_dim": None if embed_dim is None else int(embed_dim), "pooling": pooling,
            "lora": None if lora is None else copy.deepcopy(dict(lora)),
            "freeze_feature_encoder": bool(freeze_feature_encoder),
            "gradient_checkpointing": bool(gradient_checkpointing),
            "freeze_backbone": bool(freeze_backbone),
            "head": head, "distance": distance,
        })
        if distance == "compare":
            self._config.update(comparison=comparison, compare_hidden=int(compare_hidden))
        self.backbone = build_backbone(backbone, **(backbone_args or {}))
        n = self.backbone.num_layers_out
        chosen = list(range(n)) if layers is None else list(layers)
        bad = [i for i in chosen if not -n <= i < n]
        if bad or not chosen:
            raise ValueError(f"layers {chosen} out of range for {n} hidden states")
        self.layer_indices = [i % n for i in chosen]
        self.pooling = pooling
        self.distance_kind = distance
        widths = [self.backbone.hidden_sizes[i] for i in self.layer_indices]
        in_dim = sum(widths)
        if head == "none":
            if embed_dim is not None and int(embed_dim) != in_dim:
                raise ValueError(f"head='none' keeps the {in_dim} channels of the chosen hidden "
                                 f"states; embed_dim={embed_dim} cannot be honoured")
            self.embed_dim = in_dim
            self.head = None
            self.channel_blocks = widths         # NSIM's window must not cross hidden states
        else:
            if embed_dim is None:
                raise ValueError("head='linear' needs embed_dim")
            self.embed_dim = int(embed_dim)
            self.head = nn.Linear(in_dim, self.embed_dim)
            self.channel_blocks = None
        # NSIM distance: one learned weight per channel (softplus(0) for all = equal weights)
        self.channel_weights = (nn.Parameter(torch.zeros(self.embed_dim))
                                if distance == "nsim" else None)
        self.comparison = comparison if distance == "compare" else None
        self.compare_head = None
        if distance == "compare":
            check_features(comparison)
            self.compare_head = ComparisonHead(len(comparison), self.embed_dim,
                                               int(compare_hidden))

        if lora is not None:
            self._apply_lora(lora)
        if freeze_feature_encoder:
            getattr(self.backbone, "freeze_feature_encoder", lambda: None)()
        elif lora is not None and hasattr(self.backbone, "unfreeze_feature_encoder"):
            self.backbone.unfreeze_feature_encoder()
        if freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad = False
        if gradient_checkpointing:
            if not hasattr(self.backbone, "enable_gradient_checkpointing"):
                raise ValueError(f"backbone {backbone!r} does not support gradient checkpointing")
            self.backbone.enable_gradient_checkpointing()
        self.lora_merged = False
        trainable, total = self.parameter_counts()
        logger.info("QualityModel(%s): trainable parameters %d / %d = %.2f %%", backbone, trainable,
                    total, 100.0 * trainable / max(total, 1))

    # -- construction helpers -------------------------------------------------------------------
    def _apply_lora(self, lora: dict) -> None:
        unknown = set(lora) - LORA_KEYS
        if unknown:
            raise ValueError(f"unknown lora options {sorted(unknown)}; allowed: {sorted(LORA_KEYS)}")
        from peft import LoraConfig, get_peft_model

        opts = {**DEFAULT_LORA, **lora}
        config = LoraConfig(r=int(opts["r"]), lora_alpha=opts["alpha"],
                            lora_dropout=float(opts["dropout"]),
                            target_modules=list(opts["target_modules"]), bias="none")
        self.backbone.model = get_peft_model(self.backbone.model, config)

    def merge_lora(self) -> None:
        """Fold the LoRA adapters into the backbone weights (for export); ``config()["lora"]`` -> None.

        The backbone then differs from its pretrained folder, so ``save_checkpoint`` saves all
        weights.
        """
        if self._config["lora"] is None:
            return
        self.backbone.model = self.backbone.model.merge_and_unload()
        self._config["lora"] = None
        self.lora_merged = True

    # -- introspection --------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.backbone.sample_rate

    def config(self) -> dict:
        """The constructor arguments (YAML-able): ``QualityModel(**model.config())`` rebuilds it."""
        return copy.deepcopy(self._config)

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        params = list(self.parameters())
        return (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))

    def trainable_fraction(self) -> float:
        trainable, total = self.parameter_counts()
        return trainable / max(total, 1)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, wave: Tensor, lengths: Tensor | None = None,
                return_frame_lengths: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Mono ``wave`` [B, T] at ``sample_rate`` (``lengths``: valid samples per clip) ->
        [B, D] ("mean") or [B, F, D] with padded frames zeroed ("frame"); with
        ``return_frame_lengths`` also the valid frame count per clip [B]."""
        hidden, frames = self.backbone(wave, lengths)
        chosen = [hidden[i] for i in self.layer_indices]
        if self.pooling == "mean":
            pooled = torch.cat([masked_mean(h, frames) for h in chosen], dim=-1)
            out = pooled if self.head is None else self.head(torch.relu(pooled))
        else:
            x = torch.cat(chosen, dim=-1)
            mask = torch.arange(x.shape[1], device=x.device)[None, :] < frames[:, None]
            out = x if self.head is None else self.head(torch.relu(x))
            out = out * mask[..., None].to(x.dtype)
        return (out, frames) if return_frame_lengths else out

    def distance(self, a: Tensor, b: Tensor, frame_lengths: Tensor | None = None) -> Tensor:
        """Distance per item [B] (larger = more different).

        "l2": between pooled embeddings, or (frame pooling) the mean over valid frames of the
        per-frame L2 distance. "nsim": the learned-weight mean of 1 - NSIM per channel.

        Frame validity comes from ``frame_lengths`` when given, else from the zero padding that
        ``forward`` writes (l2: a frame counts when it is non-zero in both ``a`` and ``b``; nsim:
        in either, so that noise added over a silent passage counts); when a and b differ in
        length, the common leading frames are compared.
        """
        if a.dim() == 2:
            return torch.linalg.vector_norm(a - b, dim=-1)
        if self.distance_kind == "compare":
            return self.compare_head(self.comparison_features(a, b, frame_lengths))
        a, b, valid = self._common_frames(a, b, frame_lengths)
        if self.distance_kind == "nsim":
            from deepaq.nsim import channel_nsim

            weights = torch.nn.functional.softplus(self.channel_weights)
            dissimilarity = 1.0 - channel_nsim(a, b, valid, self.channel_blocks)   # [B, C]
            return (dissimilarity * weights).sum(-1) / weights.sum()
        per_frame = torch.linalg.vector_norm(a - b, dim=-1)                        # [B, F]
        valid = valid.to(per_frame.dtype)
        return (per_frame * valid).sum(1) / valid.sum(1).clamp(min=1)

    def comparison_features(self, a: Tensor, b: Tensor,
                            frame_lengths: Tensor | None = None) -> Tensor:
        """``distance="compare"``: the head's input [B, K, C] (reference ``a``, degraded ``b``)."""
        a, b, valid = self._common_frames(a, b, frame_lengths)
        return comparison_features(a, b, valid, self.comparison, self.channel_blocks)

    def _common_frames(self, a: Tensor, b: Tensor,
                       frame_lengths: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """The common leading frames of two frame sequences and which of them are valid."""
        frames = min(a.shape[1], b.shape[1])
        a, b = a[:, :frames], b[:, :frames]
        if frame_lengths is not None:
            valid = (torch.arange(frames, device=a.device)[None, :]
                     < frame_lengths.to(a.device)[:, None])
        elif self.distance_kind in ("nsim", "compare"):
            valid = (a.abs().amax(-1) > 0) | (b.abs().amax(-1) > 0)
        else:
            valid = (a.abs().amax(-1) > 0) & (b.abs().amax(-1) > 0)
        return a, b, valid
