"""MERT-v1-95M as a native ``transformers.HubertModel`` (24 kHz mono), without remote code.

MERT-v1-95M is key-for-key and numerically a ``HubertModel`` with the default ``HubertConfig``; its
remote ``modeling_MERT.py`` does not run on transformers 5, so a hub snapshot is first turned into a
plain local HubertModel folder by ``deepaq convert-mert`` and loaded here with
``local_files_only=True``. ``backbone_args`` (the YAML mapping) take one of

- ``pretrained: PATH``: a converted folder (config.json, model.safetensors, preprocessor_config.json);
- ``config: {HubertConfig kwargs}``: a random-init model (``config: {}`` = the MERT-95M shape).

Training-time behaviour is decided here, explicitly: LayerDrop is always off (``layerdrop=0``: it
would make the hidden-state list ragged), SpecAugment is off unless ``spec_augment`` is true or a
mapping of ``mask_*`` options. Inputs are normalised per clip (zero mean, unit variance over the
valid samples, as MERT's preprocessor with ``do_normalize: true``) and padding is exact: clips of
different lengths give the same hidden states as when run alone (see ``_LengthAwareFeatureEncoder``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import HubertConfig, HubertModel
from transformers.models.hubert.modeling_hubert import HubertFeatureEncoder

from deepaq.backbones import register_backbone, wave_and_lengths

MERT_SAMPLE_RATE = 24000
#: what MERT's preprocessor_config.json says (Wav2Vec2FeatureExtractor)
MERT_PREPROCESSOR = {
    "do_normalize": True,
    "feature_extractor_type": "Wav2Vec2FeatureExtractor",
    "feature_size": 1,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": True,
    "sampling_rate": MERT_SAMPLE_RATE,
}
#: a few-thousand-parameter HubertConfig for tests and CI recipes (same code path as MERT-95M)
TINY_HUBERT_CONFIG = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
    "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
}


class _LengthAwareFeatureEncoder(HubertFeatureEncoder):
    """HuBERT's conv encoder that runs clips of different lengths separately.

    The first conv layer of MERT/HuBERT-base uses GroupNorm over *time*, so zero padding changes
    the statistics of every frame of a shorter clip. When ``lengths`` is set, clips are grouped by
    length and each group runs unpadded; the outputs are zero-padded to the longest. Same
    parameters and state-dict keys as the original (the class is swapped on the instance).
    """

    lengths: Tensor | None = None

    def forward(self, input_values: Tensor) -> Tensor:
        lengths = self.lengths
        if lengths is None:
            return super().forward(input_values)
        outs: list[Tensor | None] = [None] * input_values.shape[0]
        for n in torch.unique(lengths).tolist():
            idx = torch.nonzero(lengths == n).flatten()
            feats = super().forward(input_values[idx, :n])
            for j, i in enumerate(idx.tolist()):
                outs[i] = feats[j]
        frames = max(o.shape[-1] for o in outs)
        return torch.stack([nn.functional.pad(o, (0, frames - o.shape[-1])) for o in outs])


def normalize_waveform(wave: Tensor, lengths: Tensor, eps: float = 1e-7) -> Tensor:
    """Zero mean, unit variance over each clip's first ``lengths[b]`` samples; padding set to 0.

    Same formula as ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm`` (population variance,
    ``sqrt(var + 1e-7)``), in torch so it runs on the model's device.
    """
    mask = torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]
    n = lengths.clamp(min=1).to(wave.dtype)[:, None]
    mean = (wave * mask).sum(-1, keepdim=True) / n
    var = (((wave - mean) ** 2) * mask).sum(-1, keepdim=True) / n
    return (wave - mean) / torch.sqrt(var + eps) * mask


class MertBackbone(nn.Module):
    """A HubertModel returning all its hidden states (embeddings + one per transformer layer)."""

    def __init__(self, model: HubertModel, sample_rate: int = MERT_SAMPLE_RATE,
                 normalize: bool = True, pretrained_path: str | None = None):
        super().__init__()
        model.feature_extractor.__class__ = _LengthAwareFeatureEncoder
        self.model: nn.Module = model  # becomes a peft.PeftModel when LoRA is applied
        self.sample_rate = int(sample_rate)
        self.normalize = bool(normalize)
        self.pretrained_path = pretrained_path
        self.num_layers_out = model.config.num_hidden_layers + 1
        self.hidden_size = model.config.hidden_size
        self.hidden_sizes = [self.hidden_size] * self.num_layers_out

    @property
    def hubert(self) -> HubertModel:
        """The HubertModel itself, also when wrapped by peft."""
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if get_base is not None else self.model

    def freeze_feature_encoder(self) -> None:
        """Freeze the conv waveform encoder (no gradients through it: ~25 % less training time)."""
        self.hubert.feature_extractor._freeze_parameters()

    def unfreeze_feature_encoder(self) -> None:
        enc = self.hubert.feature_extractor
        for p in enc.parameters():
            p.requires_grad = True
        enc._requires_grad = True

    def enable_gradient_checkpointing(self) -> None:
        hubert = self.hubert
        kwargs = {"use_reentrant": False}  # frozen inputs (conv encoder, LoRA) need non-reentrant
        if hasattr(hubert, "activation_checkpointing_enable"):  # transformers >= 5.x
            hubert.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            hubert.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def standalone_args(self) -> dict[str, Any]:
        """``backbone_args`` that rebuild this architecture without the pretrained folder
        (``config:`` = its full HubertConfig); used for checkpoints that store every weight."""
        drop = {"architectures", "model_type", "transformers_version", "dtype", "torch_dtype",
                "_name_or_path", "layerdrop", "apply_spec_augment"}
        config = {k: v for k, v in self.hubert.config.to_dict().items() if k not in drop}
        return {"config": config, "spec_augment": bool(self.hubert.config.apply_spec_augment),
                "normalize": self.normalize, "sample_rate": self.sample_rate}

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        return self.hubert._get_feat_extract_output_lengths(lengths).to(torch.long)

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        wave, lengths = wave_and_lengths(wave, lengths)
        total = wave.shape[1]
        frames = self.frame_lengths(lengths)
        if bool((frames < 1).any()):
            raise ValueError(f"clip too short for the backbone: {int(lengths.min())} samples")
        varying = bool((lengths != total).any())
        if self.normalize:
            wave = normalize_waveform(wave, lengths)
        elif varying:
            wave = wave * (torch.arange(total, device=wave.device)[None, :] < lengths[:, None])
        attention_mask = None
        if varying:
            attention_mask = (torch.arange(total, device=wave.device)[None, :]
                              < lengths[:, None]).long()
        encoder = self.hubert.feature_extractor
        encoder.lengths = lengths if varying else None
        try:
            out = self.model(input_values=wave, attention_mask=attention_mask,
                             output_hidden_states=True, return_dict=True)
        finally:
            encoder.lengths = None
        return list(out.hidden_states), frames


def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _spec_augment_overrides(spec_augment: bool | dict) -> dict[str, Any]:
    if isinstance(spec_augment, dict):
        bad = [k for k in spec_augment if not k.startswith("mask_")]
        if bad:
            raise ValueError(f"spec_augment options must be HubertConfig mask_* keys, got {bad}")
        return {"apply_spec_augment": True, **spec_augment}
    return {"apply_spec_augment": bool(spec_augment)}


@register_backbone("mert")
def build_mert(pretrained: str | None = None, config: dict | None = None,
               spec_augment: bool | dict = False, normalize: bool | None = None,
               sample_rate: int | None = None, attn_implementation: str = "sdpa") -> MertBackbone:
    """Build MERT from a converted folder (``pretrained``) or a random ``config`` (HubertConfig kwargs).

    ``spec_augment``: False (default) / True (the config's mask_* settings) / {mask_time_prob: ..}.
    ``normalize`` and ``sample_rate`` default to the folder's preprocessor_config.json (MERT: true,
    24000).
    """
    if (pretrained is None) == (config is None):
        raise ValueError("mert backbone_args need exactly one of 'pretrained: PATH' (a folder made by "
                         "'deepaq convert-mert') or 'config: {HubertConfig kwargs}' (random init)")
    overrides = {"layerdrop": 0.0, **_spec_augment_overrides(spec_augment)}
    preprocessor = dict(MERT_PREPROCESSOR)
    if pretrained is not None:
        folder = Path(pretrained).expanduser()
        if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
            raise FileNotFoundError(
                f"{folder}: not a converted MERT folder (needs config.json and model.safetensors; "
                "make one with 'deepaq convert-mert SRC DST')")
        if (folder / "preprocessor_config.json").is_file():
            preprocessor.update(_read_json(folder / "preprocessor_config.json"))
        model, info = HubertModel.from_pretrained(
            str(folder), local_files_only=True, output_loading_info=True, dtype=torch.float32,
            attn_implementation=attn_implementation, **overrides)
        problems = {k: sorted(v) for k, v in info.items() if k != "error_msgs" and v}
        if problems or info.get("error_msgs"):
            raise ValueError(f"{folder}: weights do not match its config: {problems} "
                             f"{info.get('error_msgs') or ''}")
        pretrained = str(folder.resolve())
        # from_pretrained hands back eval mode and Lightning keeps each module's mode: without
        # this the paper recipe would fine-tune with MERT's dropout silently off.
        model.train()
    else:
        cfg = HubertConfig(**{**dict(config or {}), **overrides},
                           attn_implementation=attn_implementation)
        model = HubertModel(cfg)
    return MertBackbone(
        model,
        sample_rate=int(sample_rate or preprocessor.get("sampling_rate", MERT_SAMPLE_RATE)),
        normalize=bool(preprocessor.get("do_normalize", True) if normalize is None else normalize),
        pretrained_path=pretrained,
    )
