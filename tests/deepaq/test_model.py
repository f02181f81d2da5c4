"""QualityModel on real music: pooling, exact padding, LoRA bookkeeping, the log-mel CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from deepaq.audio import resample
from deepaq.backbones import available_backbones, build_backbone
from deepaq.backbones.logmel_cnn import log_mel_spectrogram, mel_filters
from deepaq.backbones.mert import TINY_HUBERT_CONFIG
from deepaq.model import QualityModel

TINY = {"backbone": "mert", "backbone_args": {"config": TINY_HUBERT_CONFIG}, "embed_dim": 16}
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
SMALL_CNN = {"backbone": "logmel_cnn", "backbone_args": {"channels": [4, 8]}, "embed_dim": 16}


def mono(clip: np.ndarray, rate: int) -> torch.Tensor:
    x = clip.mean(0)
    if rate != 48000:
        x = resample(x[None], 48000, rate)[0]
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def padded_batch(clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(c) for c in clips])
    batch = torch.zeros(len(clips), int(lengths.max()) + 1234)  # extra padding beyond the longest
    for i, c in enumerate(clips):
        batch[i, :len(c)] = c
    return batch, lengths


def test_registry_lists_backbones():
    assert {"mert", "logmel_cnn"} <= set(available_backbones())
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("nope")
    with pytest.raises(ValueError, match="exactly one"):
        build_backbone("mert")


@pytest.mark.parametrize("spec", [TINY, SMALL_CNN], ids=["mert", "logmel_cnn"])
@pytest.mark.parametrize("pooling", ["mean", "frame"])
def test_padding_gives_same_embedding_as_alone(music_clip, spec, pooling):
    torch.manual_seed(0)
    model = QualityModel(**spec, pooling=pooling).eval()
    rate = model.sample_rate
    clips = [mono(music_clip("guitar", 1.0, 1.0), rate), mono(music_clip("strauss", 0.6, 2.0), rate),
             mono(music_clip("steely", 0.8, 0.5), rate)]
    batch, lengths = padded_batch(clips)
    with torch.no_grad():
        together, frames = model(batch, lengths, return_frame_lengths=True)
        for i, clip in enumerate(clips):
            alone = model(clip[None])
            if pooling == "mean":
                assert together.shape == (3, 16)
                torch.testing.assert_close(together[i], alone[0], atol=2e-5, rtol=1e-4)
            else:
                n = int(frames[i])
                assert alone.shape[1] == n
                torch.testing.assert_close(together[i, :n], alone[0], atol=2e-5, rtol=1e-4)
                assert together[i, n:].abs().max() == 0 if n < together.shape[1] else True
        # a clip against itself is at distance 0, against another clip it is not
        d_self = model.distance(together, together.clone())
        assert torch.all(d_self == 0)
        d = model.distance(together, together.roll(1, 0))
        assert torch.all(d > 0)
        if pooling == "frame":  # zero-padding inference == explicit frame lengths
            torch.testing.assert_close(d, model.distance(together, together.roll(1, 0),
                                                         frames.minimum(frames.roll(1, 0))))


def test_layers_selection_and_head_size():
    model = QualityModel(**TINY, layers=[0, -1])
    assert model.layer_indices == [0, 2]
    assert model.head.in_features == 2 * TINY_HUBERT_CONFIG["hidden_size"]
    assert QualityModel(**TINY).head.in_features == 3 * TINY_HUBERT_CONFIG["hidden_size"]
    with pytest.raises(ValueError, match="out of range"):
        QualityModel(**TINY, layers=[3])


def test_config_rebuilds_model_through_yaml():
    model = QualityModel(**TINY, layers=[1, 2], pooling="frame", lora=LORA)
    cfg = yaml.safe_load(yaml.safe_dump(model.config()))
    assert cfg == model.config()
    rebuilt = QualityModel(**cfg)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}


def test_default_mert_lora_trainable_fraction_is_paper_value(caplog):
    """MERT-95M + LoRA r8 on q,v + 9984 -> 256 head: ~2.93 % trainable (built on the meta device)."""
    with caplog.at_level("INFO", logger="deepaq.model"), torch.device("meta"):
        model = QualityModel(backbone_args={"config": {}}, lora={})  # {} = DeePAQ's defaults
    trainable, _ = model.parameter_counts()
    lora = 12 * 2 * 8 * (768 + 768)
    head = 13 * 768 * 256 + 256
    assert trainable == lora + head
    assert model.trainable_fraction() == pytest.approx(0.0293, abs=5e-5)
    assert "2.93 %" in caplog.text


def test_lora_trains_adapters_and_head_only(music_clip):
    torch.manual_seed(0)
    model = QualityModel(**TINY, lora=LORA).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    wave = torch.stack([mono(music_clip("guitar", 0.5), 24000), mono(music_clip("strauss", 0.5), 24000)])
    model(wave).pow(2).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_B" in n and g is not None and g.abs().sum() > 0 for n, g in grads.items())
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    # unfreezing the conv encoder under LoRA makes it train too
    full = QualityModel(**TINY, lora=LORA, freeze_feature_encoder=False)
    assert any(p.requires_grad for n, p in full.named_parameters() if "feature_extractor" in n)
    assert full.trainable_fraction() > model.trainable_fraction()


def test_mert_options_layerdrop_specaugment_checkpointing(music_clip):
    model = QualityModel(**TINY)
    hubert = model.backbone.hubert
    assert hubert.config.layerdrop == 0.0 and hubert.config.apply_spec_augment is False
    assert not any(p.requires_grad for p in hubert.feature_extractor.parameters())
    aug = QualityModel(backbone="mert", backbone_args={
        "config": {**TINY_HUBERT_CONFIG, "hidden_dropout": 0.0, "attention_dropout": 0.0,
                   "activation_dropout": 0.0, "feat_proj_dropout": 0.0},
        "spec_augment": {"mask_time_prob": 0.5, "mask_time_length": 2}}, embed_dim=16)
    wave = mono(music_clip("guitar", 0.5), 24000)[None]
    with torch.no_grad():
        assert not torch.equal(aug.train()(wave), aug.eval()(wave))  # masking only in training
    torch.manual_seed(1)
    ckpt = QualityModel(**TINY, gradient_checkpointing=True, lora=LORA)
    plain = QualityModel(**TINY, lora=LORA)
    plain.load_state_dict(ckpt.state_dict())
    x = torch.stack([wave[0], wave[0].flip(0)])
    for m in (ckpt, plain):
        m.eval()
    torch.testing.assert_close(ckpt(x), plain(x))
    ckpt.train()(x).sum().backward()  # checkpointed backward works with a frozen conv encoder


def test_mert_normalises_input_level():
    torch.manual_seed(0)
    model = QualityModel(**TINY).eval()
    x = torch.randn(1, 12000)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(0.1 * x + 0.01), atol=1e-4, rtol=1e-4)


def test_log_mel_sees_a_lowpass_cutoff(music_clip):
    from scipy.signal import butter, sosfiltfilt

    clip = music_clip("guitar", 2.0).mean(0)
    low = sosfiltfilt(butter(8, 8000, fs=48000, output="sos"), clip).astype(np.float32)
    ref, deg = log_mel_spectrogram(clip), log_mel_spectrogram(low)
    assert ref.shape == (1 + (96000 - 2048) // 512, 128)
    centres = mel_filters(48000, 2048, 128).argmax(0).numpy() * 48000 / 2048
    high, low_band = centres > 11000, centres < 4000
    assert (ref[:, high] - deg[:, high]).mean() > 20.0       # the cutoff shows, by tens of dB
    assert np.abs(ref[:, low_band] - deg[:, low_band]).mean() < 0.5
    stereo = log_mel_spectrogram(music_clip("guitar", 2.0))
    assert stereo.shape == (2, *ref.shape)


def test_logmel_cnn_hidden_states():
    backbone = build_backbone("logmel_cnn", channels=[4, 8, 8], n_mels=64)
    hidden, frames = backbone(torch.randn(2, 48000), torch.tensor([48000, 30000]))
    assert backbone.hidden_sizes == [64, 4 * 32, 8 * 16, 8 * 8] == [h.shape[-1] for h in hidden]
    assert frames.tolist() == [1 + (48000 - 2048) // 512, 1 + (30000 - 2048) // 512]
    assert sum(p.numel() for p in backbone.parameters()) < 5000
    with pytest.raises(ValueError, match="too short"):
        backbone(torch.randn(1, 1000))


# -- distance="compare": per-band comparison features + a learned head ---------------------------

COMPARE = {"backbone": "gammatone", "backbone_args": {"windows": [3840, 2048], "bands": [32, 64],
                                                      "level_dbfs": -20.0},
           "embed_dim": None, "head": "none", "pooling": "frame", "distance": "compare"}


def test_compare_distance_is_zero_for_identical_gain_free_and_grows_with_noise(music_clip):
    from data_prep.degradations import get_degradation

    model = QualityModel(**COMPARE).eval()
    clip = music_clip(seconds=2.0)
    ref = mono(clip, 48000)[None]
    rng = np.random.default_rng(0)
    noisy = [mono(get_degradation("noise_pink")(clip, 48000, snr, rng), 48000)
             for snr in (40.0, 25.0, 10.0)]
    with torch.no_grad():
        r = model(ref)
        d_same = model.distance(r, model(ref.clone()))
        d_gain = model.distance(r, model(ref * 10 ** (-6 / 20)))
        d_noise = [float(model.distance(r, model(x[None]))) for x in noisy]
        feats = model.comparison_features(r, model(noisy[-1][None]))
    assert float(d_same) == 0.0                       # exactly 0: a bias-free ReLU head
    assert abs(float(d_gain)) < 1e-3 * d_noise[0]     # level alignment: 6 dB quieter is clean
    assert d_noise[0] < d_noise[1] < d_noise[2]       # the untrained head is already monotone
    # noise adds energy: the excess feature outweighs the deficit one in every resolution
    excess, deficit = feats[0, 3].sum(), feats[0, 2].sum()
    assert excess > 5 * deficit


def test_compare_model_config_round_trips_and_rejects_bad_options(tmp_path, music_clip):
    from deepaq.checkpoint import load_checkpoint, save_checkpoint

    model = QualityModel(**COMPARE, comparison=["nsim", "deficit", "excess"], compare_hidden=4)
    with torch.no_grad():
        model.compare_head.out_weights.normal_()
    save_checkpoint(model.eval(), tmp_path / "ck")
    again, _ = load_checkpoint(tmp_path / "ck")
    x = mono(music_clip(seconds=1.0), 48000)[None]
    y = x + 0.01 * torch.randn_like(x)
    with torch.no_grad():
        assert torch.equal(model.distance(model(x), model(y)), again.distance(again(x), again(y)))
    assert again.config()["comparison"] == ["nsim", "deficit", "excess"]
    with pytest.raises(ValueError, match="comparison"):
        QualityModel(**{**COMPARE, "comparison": ["nsim", "loudness"]})
    with pytest.raises(ValueError, match="head='none'"):
        QualityModel(**{**COMPARE, "head": "linear", "embed_dim": 8})


def test_comparison_head_is_monotone_in_every_feature(music_clip):
    """More damage in any feature never lowers the distance, whatever the trained weights: a
    degradation never seen in training cannot score better than the reference."""
    from deepaq.band_compare import ComparisonHead

    model = QualityModel(**COMPARE).eval()
    clip = mono(music_clip(seconds=1.0), 48000)[None]
    with torch.no_grad():
        x = model.comparison_features(model(clip), model(clip + 0.02 * torch.randn_like(clip)))
        for seed in range(3):
            head = ComparisonHead(x.shape[1], x.shape[2], hidden=8, seed=seed)
            g = torch.Generator().manual_seed(seed)
            for p in head.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 2)
            more = x + torch.rand(x.shape, generator=g) * x.mean() * (torch.rand(x.shape, generator=g) < 0.1)
            assert float(head(torch.zeros_like(x))) == 0.0
            assert float(head(more)) >= float(head(x)) > 0.0
