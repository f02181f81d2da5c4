"""convert-mert: a fake MERT snapshot (old weight-norm names, MERT config) -> exact HubertModel."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import HubertConfig, HubertModel

from deepaq.audio import resample
from deepaq.backbones import build_backbone, folder_sha256
from deepaq.backbones.convert_mert import ConversionError, convert, main
from deepaq.backbones.mert import TINY_HUBERT_CONFIG

NEW_G = "encoder.pos_conv_embed.conv.parametrizations.weight.original0"
NEW_V = "encoder.pos_conv_embed.conv.parametrizations.weight.original1"


class NotATensor:
    """Pickled into a .bin to check that conversion never unpickles arbitrary objects."""


@pytest.fixture(scope="module")
def original() -> HubertModel:
    torch.manual_seed(0)
    return HubertModel(HubertConfig(**TINY_HUBERT_CONFIG)).eval()


def mert_config(model: HubertModel, **changes) -> dict:
    cfg = {k: v for k, v in model.config.to_dict().items() if k not in ("dtype", "transformers_version")}
    cfg.update({"model_type": "mert_model", "architectures": ["MERTModel"],
                "auto_map": {"AutoConfig": "configuration_MERT.MERTConfig",
                             "AutoModel": "modeling_MERT.MERTModel"},
                "feature_extractor_cqt": False, "feature_extractor_cqt_bins": 336,
                "deepnorm": False, "attention_relax": -1.0, "sample_rate": 24000})
    cfg.update(changes)
    return cfg


def old_style_state(model: HubertModel) -> dict:
    """The state dict as MERT's hub checkpoint stores it: weight_g / weight_v, extra tensors."""
    state = dict(model.state_dict())
    state["encoder.pos_conv_embed.conv.weight_g"] = state.pop(NEW_G)
    state["encoder.pos_conv_embed.conv.weight_v"] = state.pop(NEW_V)
    state["label_embs_concat"] = torch.randn(10, 8)  # pretraining codebook, not in HubertModel
    return state


def make_snapshot(folder: Path, model: HubertModel, state: dict | None = None, **changes) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(mert_config(model, **changes)))
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
         "padding_side": "right", "padding_value": 0, "return_attention_mask": True,
         "sampling_rate": 24000}))
    torch.save(old_style_state(model) if state is None else state, folder / "pytorch_model.bin")
    return folder


def test_converts_exactly_and_loads_strictly(tmp_path, original, music_clip):
    snapshot = make_snapshot(tmp_path / "snap", original)
    assert "weight_g" in "".join(torch.load(snapshot / "pytorch_model.bin", weights_only=True))
    dst = tmp_path / "hubert"
    assert main([str(snapshot), str(dst)]) == 0
    files = {p.name for p in dst.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "sha256.txt"} <= files
    assert json.loads((dst / "config.json").read_text())["model_type"] == "hubert"
    for line in (dst / "sha256.txt").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((dst / name).read_bytes()).hexdigest() == digest
    report = json.loads((dst / "conversion.json").read_text())
    assert report["dropped_keys"] == ["label_embs_concat"] and len(report["renamed_keys"]) == 2

    loaded, info = HubertModel.from_pretrained(dst, local_files_only=True, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    wave = torch.from_numpy(resample(music_clip("guitar", 1.0).mean(0, keepdims=True), 48000, 24000))
    with torch.no_grad():
        want = original(wave, output_hidden_states=True).hidden_states
        got = loaded.eval()(wave, output_hidden_states=True).hidden_states
    for a, b in zip(want, got):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)

    backbone = build_backbone("mert", pretrained=str(dst))
    assert backbone.sample_rate == 24000 and backbone.normalize and backbone.pretrained_path
    # fine-tuning starts in train mode: MERT's own dropout must be active, as in a random init
    assert all(m.training for m in backbone.modules() if isinstance(m, torch.nn.Dropout))
    assert len(folder_sha256(dst)) == 64
    assert main([str(snapshot), str(dst)]) == 1          # refuses to overwrite without --force
    assert main([str(snapshot), str(dst), "--force"]) == 0


def test_bare_bin_with_config_and_hub_id_needs_permission(tmp_path, original, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    torch.save(old_style_state(original), bare / "pytorch_model.bin")
    cfg = tmp_path / "mert_config.json"
    cfg.write_text(json.dumps(mert_config(original)))
    dst = convert(bare / "pytorch_model.bin", tmp_path / "out", config_path=str(cfg))
    state = HubertModel.from_pretrained(dst, local_files_only=True).state_dict()
    torch.testing.assert_close(state[NEW_V], original.state_dict()[NEW_V], atol=0, rtol=0)
    assert main(["m-a-p/MERT-v1-95M", str(tmp_path / "x")]) == 1
    assert "--allow-download" in capsys.readouterr().err


@pytest.mark.parametrize("change,message", [
    ({"feature_extractor_cqt": True}, "feature_extractor_cqt"),
    ({"deepnorm": True}, "deepnorm"),
    ({"attention_relax": 32.0}, "attention_relax"),
    ({"model_type": "wav2vec2"}, "model_type"),
])
def test_refuses_mert_options_hubert_cannot_express(tmp_path, original, change, message):
    snapshot = make_snapshot(tmp_path / "snap", original, **change)
    with pytest.raises(ConversionError, match=message):
        convert(snapshot, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fails_on_unexpected_or_missing_keys_and_pickled_objects(tmp_path, original):
    state = old_style_state(original)
    state["encoder.layers.0.attention.relax_scale"] = torch.ones(1)
    with pytest.raises(ConversionError, match="relax_scale"):
        convert(make_snapshot(tmp_path / "a", original, state=state), tmp_path / "out")
    state = old_style_state(original)
    del state["encoder.layer_norm.bias"]
    with pytest.raises(ConversionError, match="encoder.layer_norm.bias"):
        convert(make_snapshot(tmp_path / "b", original, state=state), tmp_path / "out")
    with pytest.raises(ConversionError, match="weights-only"):
        convert(make_snapshot(tmp_path / "c", original, state={"x": NotATensor()}), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert np.all([not p.name.startswith(".out") for p in tmp_path.iterdir()])  # no temp leftovers
