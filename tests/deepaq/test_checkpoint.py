"""Checkpoint folders: identical outputs after a round trip, no pickle, backbone identity enforced."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from transformers import HubertConfig, HubertModel

from deepaq.audio import resample
from deepaq.backbones.mert import MERT_PREPROCESSOR, TINY_HUBERT_CONFIG
from deepaq.checkpoint import (
    BackboneMismatchError,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from deepaq.model import QualityModel

LORA = {"r": 4, "alpha": 8, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
CALIBRATION = {"kind": "monotonic_cubic", "coef": [4.7, -0.5, 0.01, 0.0], "x_range": [0.0, 9.0]}


@pytest.fixture(scope="module")
def waves(music_clip):
    def at(rate):
        clips = [music_clip("guitar", 1.0).mean(0), music_clip("strauss", 0.7).mean(0)]
        if rate != 48000:
            clips = [resample(c[None], 48000, rate)[0] for c in clips]
        batch = np.zeros((2, len(clips[0])), np.float32)
        for i, c in enumerate(clips):
            batch[i, :len(c)] = c
        return torch.from_numpy(batch), torch.tensor([len(c) for c in clips])

    return at


def pretrained_folder(path, seed=0):
    torch.manual_seed(seed)
    HubertModel(HubertConfig(**TINY_HUBERT_CONFIG)).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(MERT_PREPROCESSOR))
    return path


def trained(model: QualityModel) -> QualityModel:
    """Stand-in for training: move every trainable tensor (LoRA B starts at zero)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def embed(model, batch):
    with torch.no_grad():
        return model(*batch)


def test_lora_on_pretrained_saves_trainable_only_and_reloads_identically(tmp_path, waves):
    folder = pretrained_folder(tmp_path / "hubert")
    model = trained(QualityModel(backbone_args={"pretrained": str(folder)}, lora=LORA, embed_dim=8))
    batch = waves(24000)
    out = save_checkpoint(model, tmp_path / "ckpt", calibration=CALIBRATION,
                          metadata={"epoch": 3, "val_spearman": np.float32(0.9), "path": tmp_path})
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.yaml", "model.safetensors", "calibration.json", "backbone.json"])
    doc = yaml.safe_load((out / "config.yaml").read_text())
    assert doc["model"] == model.config() and doc["format"]["weights"] == "trainable"
    assert doc["metadata"]["epoch"] == 3
    # safetensors, not pickle: an 8-byte header length then JSON naming exactly the trained tensors
    raw = (out / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    names = set(header) - {"__metadata__"}
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("head.") for n in names)

    loaded, calibration = load_checkpoint(out)
    assert calibration == CALIBRATION and not loaded.training
    torch.testing.assert_close(embed(loaded, batch), embed(model, batch), atol=0, rtol=0)

    # the backbone folder moves: point at it; a different backbone is refused
    moved = shutil.copytree(folder, tmp_path / "moved")
    shutil.rmtree(folder)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(out)
    again, _ = load_checkpoint(out, backbone_path=moved)
    torch.testing.assert_close(embed(again, batch), embed(model, batch), atol=0, rtol=0)
    other = pretrained_folder(tmp_path / "other", seed=1)
    with pytest.raises(BackboneMismatchError, match="refusing a different backbone"):
        load_checkpoint(out, backbone_path=other)

    # merged LoRA (export): the backbone changed, so every tensor is saved; same outputs
    model.merge_lora()
    assert model.config()["lora"] is None
    merged = save_checkpoint(model, tmp_path / "merged")
    assert yaml.safe_load((merged / "config.yaml").read_text())["format"]["weights"] == "full"
    assert "pretrained" not in yaml.safe_load((merged / "config.yaml").read_text())["model"][
        "backbone_args"]
    shutil.rmtree(moved)  # a full checkpoint is self-contained
    reloaded, _ = load_checkpoint(merged)
    torch.testing.assert_close(embed(reloaded, batch), embed(again, batch), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spec", [
    {"backbone": "mert", "backbone_args": {"config": TINY_HUBERT_CONFIG}, "lora": LORA},
    {"backbone": "logmel_cnn", "backbone_args": {"channels": [4, 8]}, "pooling": "frame"},
], ids=["mert-random", "logmel_cnn"])
def test_random_init_saves_everything(tmp_path, waves, spec):
    torch.manual_seed(0)
    model = trained(QualityModel(**spec, embed_dim=8))
    batch = waves(model.sample_rate)
    out = save_checkpoint(model, tmp_path / "ckpt")
    assert not (out / "backbone.json").exists() and not (out / "calibration.json").exists()
    loaded, calibration = load_checkpoint(out)
    assert calibration is None
    torch.testing.assert_close(embed(loaded, batch), embed(model, batch), atol=0, rtol=0)


def test_overwrite_is_atomic_and_refuses_foreign_folders(tmp_path, waves):
    torch.manual_seed(0)
    spec = {"backbone": "logmel_cnn", "backbone_args": {"channels": [4]}, "embed_dim": 4}
    first, second = trained(QualityModel(**spec)), trained(QualityModel(**spec))
    save_checkpoint(first, tmp_path / "ckpt", calibration=CALIBRATION)
    save_checkpoint(second, tmp_path / "ckpt")          # replaces the whole folder
    loaded, calibration = load_checkpoint(tmp_path / "ckpt")
    assert calibration is None
    batch = waves(48000)
    torch.testing.assert_close(embed(loaded, batch), embed(second, batch), atol=0, rtol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp folders left behind
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        save_checkpoint(first, foreign)
    assert (foreign / "todo.txt").read_text() == "mine"
    # a config that does not fit the weights is refused, not silently half-loaded
    cfg = yaml.safe_load((tmp_path / "ckpt" / "config.yaml").read_text())
    cfg["model"]["embed_dim"] = 5
    (tmp_path / "ckpt" / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match="shapes"):
        load_checkpoint(tmp_path / "ckpt")
