"""Training: excerpt batch sampler, corpus dataset, and a 2-epoch CPU fit through the CLI.

The corpus is made in the test from the test music (short excerpts, 2 codecs x 2 bitrates,
ViSQOL labels) with the real corpus pipeline; the fit uses configs/train/tiny.yaml.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from deepaq.training.sampler import ExcerptBatchSampler

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "train" / "tiny.yaml"
TRACKS = ["guitar", "castanets", "glock", "harpsichord", "moonlight", "sopr"]


# -- sampler -------------------------------------------------------------------------------------

def _toy_items(n_excerpts: int = 5, n_coded: int = 6) -> tuple[list[str], list[bool]]:
    ids, clean = [], []
    for e in range(n_excerpts):
        for c in range(n_coded + 1):
            ids.append(f"ex{e}")
            clean.append(c == 0)
    return ids, clean


def test_sampler_groups_excerpts_with_clean_and_covers_every_condition():
    ids, clean = _toy_items()
    s = ExcerptBatchSampler(ids, clean, excerpts_per_batch=2, conditions_per_excerpt=3, seed=1)
    batches = list(s)
    assert len(batches) == len(s)
    seen = set()
    for b in batches:
        assert len(b) == 2 * 3 or b is batches[-1]
        for g in range(0, len(b), 3):
            group = b[g:g + 3]
            assert len({ids[i] for i in group}) == 1, "a group mixes excerpts"
            assert clean[group[0]], "each group starts with its excerpt's clean item"
            assert len(set(group)) == len(group)
        seen.update(b)
    assert seen == set(range(len(ids))), "an epoch must cover every condition of every excerpt"


def test_sampler_is_seeded_reshuffles_per_epoch_and_shards_ranks_evenly():
    ids, clean = _toy_items(n_excerpts=9)
    a = ExcerptBatchSampler(ids, clean, excerpts_per_batch=2, conditions_per_excerpt=4, seed=3)
    b = ExcerptBatchSampler(ids, clean, excerpts_per_batch=2, conditions_per_excerpt=4, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    ranks = [ExcerptBatchSampler(ids, clean, excerpts_per_batch=2, conditions_per_excerpt=4,
                                 seed=3, num_replicas=3, rank=r) for r in range(3)]
    shards = [list(r) for r in ranks]
    assert len({len(sh) for sh in shards}) == 1, "every DDP rank needs the same number of batches"
    flat = [tuple(b) for sh in shards for b in sh]
    assert len(flat) == len(set(flat)) and all(tuple(b) in set(map(tuple, first)) for b in flat)


# -- corpus --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory, music_file) -> Path:
    """A labelled corpus of 1 s excerpts (two per track: the fit crops 1 s anyway, and more
    excerpts give its two epochs more steps) of 6 test tracks, 2 codecs x 2 bitrates."""
    from data_prep.pipeline import CorpusConfig, build_corpus

    out = tmp_path_factory.mktemp("corpus")
    inputs = [str(music_file(t)) for t in TRACKS]
    cfg = CorpusConfig(excerpt_seconds=1.0, max_excerpts_per_track=2, channels="mono",
                       grid=str(REPO / "configs" / "data_prep" / "tiny_grid.yaml"), splits={"train": 0.67, "val": 0.33}, seed=0)
    result = build_corpus(inputs, out, cfg, jobs=1, progress=False)
    assert result.num_items >= 20, result
    return Path(result.manifest)


def test_dataset_crops_item_and_reference_at_the_same_place(corpus):
    from deepaq.training.data import CorpusDataset, collate_items

    ds = CorpusDataset(corpus, split=None, sample_rate=24000, crop_seconds=0.5)
    clean = [i for i, r in enumerate(ds.rows) if r["condition"] == "clean"]
    torch.manual_seed(0)
    s = ds[clean[0]]
    assert s["item"].shape == (12000,) and not s["coded"] and math.isinf(s["bitrate"])
    assert torch.equal(s["item"], s["reference"]), "clean item and reference crops differ"
    offsets = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        offsets.add(int(torch.argmax(ds[clean[0]]["item"]).item()))
    assert len(offsets) > 1, "random crop picks the same window every epoch"
    coded = [i for i, r in enumerate(ds.rows) if r["condition"] != "clean"][:3]
    batch = collate_items([ds[i] for i in coded] + [s])
    assert batch["item"].shape == (4, 12000) and batch["coded"].tolist() == [True] * 3 + [False]
    assert torch.isfinite(batch["visqol"]).all() and (batch["bitrate"][:3] < 200).all()


@pytest.fixture(scope="module")
def crop_corpus(tmp_path_factory, music_clip) -> Path:
    """Unlabelled 2 s stereo excerpts of three real recordings, 2 codecs x 2 bitrates."""
    import soundfile as sf

    from data_prep.pipeline import CorpusConfig, build_corpus

    src = tmp_path_factory.mktemp("crop_src")
    for name in ("guitar", "glock", "sopr"):
        sf.write(src / f"{name}.wav", music_clip(name, 2.0, 1.0).T, 48000)
    cfg = CorpusConfig(excerpt_seconds=2.0, grid=str(REPO / "configs" / "data_prep" / "tiny_grid.yaml"),
                       labels="none", splits={"train": 1.0})
    return build_corpus([src], tmp_path_factory.mktemp("crop_corpus"), cfg, progress=False).manifest


def test_conditions_of_an_excerpt_share_one_crop_per_epoch(crop_corpus):
    from deepaq.training.data import CorpusDataset

    ds = CorpusDataset(crop_corpus, split=None, sample_rate=24000, crop_seconds=0.5, crop_seed=3)
    by_excerpt: dict[str, list[int]] = {}
    for i, r in enumerate(ds.rows):
        by_excerpt.setdefault(r["excerpt_id"], []).append(i)
    assert len(by_excerpt) == 3 and all(len(v) == 5 for v in by_excerpt.values())
    starts_over_epochs = set()
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        for rows in by_excerpt.values():
            starts = {ds.crop_window(i) for i in rows}
            assert len(starts) == 1, f"conditions of one excerpt cropped apart: {starts}"
            starts_over_epochs |= starts
            clean = next(i for i in rows if not ds[i]["coded"])
            clean_crop = ds[clean]["item"]
            for i in rows:
                if i != clean:
                    assert torch.equal(ds[i]["reference"], clean_crop)
            # an index that carries its epoch (what loader workers get) crops the same way
            assert torch.equal(ds[(clean, epoch)]["item"], clean_crop)
    assert len(starts_over_epochs) > 3, "each epoch should move the window"


def test_training_batches_align_coded_items_with_the_clean_crop(crop_corpus):
    from deepaq.training.data import CorpusDataModule

    dm = CorpusDataModule(str(crop_corpus), batch_size=10, conditions_per_excerpt=5,
                          crop_seconds=0.5, train_reference=True, seed=0, val_split="train")
    dm.setup("fit")
    loader = dm.train_dataloader()
    for epoch in (0, 1):
        loader.batch_sampler.set_epoch(epoch)
        seen = 0
        for batch in loader:
            clean = {int(e): j for j, (e, c) in enumerate(zip(batch["excerpt"], batch["coded"]))
                     if not c}
            for j, e in enumerate(batch["excerpt"].tolist()):
                assert torch.equal(batch["reference"][j], batch["item"][clean[e]])
                seen += 1
        assert seen == 15


def test_mixed_channel_corpus_without_per_channel_labels_warns(tmp_path, music_clip):
    import soundfile as sf

    from data_prep.pipeline import CorpusConfig, build_corpus
    from deepaq.manifest import config_sidecar, read_manifest
    from deepaq.training.data import warn_total_bitrate_labels

    x = music_clip("guitar", 1.0, 1.0)
    sf.write(tmp_path / "stereo.wav", x.T, 48000)
    sf.write(tmp_path / "mono.wav", x[0], 48000)
    cfg = CorpusConfig(excerpt_seconds=1.0, labels="none", splits={"train": 1.0},
                       grid=str(REPO / "configs" / "data_prep" / "tiny_grid.yaml"))
    manifest = build_corpus([tmp_path / "stereo.wav", tmp_path / "mono.wav"], tmp_path / "c", cfg,
                            progress=False).manifest
    rows = read_manifest(manifest)
    assert not warn_total_bitrate_labels(manifest, rows)  # built with per-channel labels
    config_sidecar(manifest).unlink()  # as a corpus built before per-channel labels
    with pytest.warns(UserWarning, match="per channel"):
        assert warn_total_bitrate_labels(manifest, rows)


# -- fit -----------------------------------------------------------------------------------------

def _fit(corpus: Path, run_dir: Path, *extra: str) -> Path:
    from deepaq.training.cli import main

    code = main(["fit", "-c", str(TINY), "--data.manifest", str(corpus),
                 "--trainer.default_root_dir", str(run_dir),
                 "--trainer.logger.init_args.save_dir", str(run_dir),
                 "--model.export_dir", str(run_dir / "model"), *extra])
    assert code == 0
    return run_dir


def _metrics(run_dir: Path) -> list[dict]:
    (path,) = run_dir.rglob("metrics.csv")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _column(rows: list[dict], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name) not in (None, "")]


def _fixed_batch(corpus: Path) -> dict:
    from deepaq.training.data import CorpusDataset, collate_items

    ds = CorpusDataset(corpus, split="train", sample_rate=24000, crop_seconds=1.0,
                       random_crop=False, load_reference=True)
    return collate_items([ds[i] for i in range(len(ds))])


def test_fit_two_epochs_learns_validates_exports_and_is_deterministic(corpus, tmp_path):
    import yaml

    from deepaq.checkpoint import load_checkpoint
    from deepaq.training.cli import build_cli
    from deepaq.training.export import main as export_main

    # The untrained model exactly as fit builds it (same seed, same recipe).
    initial = build_cli(["-c", str(TINY), "--data.manifest", str(corpus),
                         "--trainer.logger", "false"], run=False).model
    batch = _fixed_batch(corpus)
    with torch.no_grad():
        initial.eval()
        loss_before = float(initial.compute_loss(batch)[0])

    run = _fit(corpus, tmp_path / "a")
    rows = _metrics(run)
    epoch_loss = _column(rows, "train/loss_epoch")
    assert len(epoch_loss) == 2 and all(map(math.isfinite, epoch_loss))
    spearman = _column(rows, "val/spearman")
    assert len(spearman) == 2 and all(-1.0 <= v <= 1.0 for v in spearman)
    assert len(_column(rows, "val/pearson")) == 2
    assert list(run.rglob("config.yaml")), "resolved config not saved next to the checkpoints"
    assert list(run.rglob("*.ckpt")), "no Lightning checkpoint kept"

    model_dir = run / "model"
    assert (model_dir / "model.safetensors").is_file()
    train_cfg = yaml.safe_load((model_dir / "train_config.yaml").read_text())
    assert train_cfg["data"]["manifest"] == str(corpus)
    model, calibration = load_checkpoint(model_dir)
    assert calibration is not None and calibration["kind"] == "monotonic_cubic"

    from deepaq.training.module import DeePAQModule

    trained = DeePAQModule(model=model.config())
    trained.model = model
    with torch.no_grad():
        loss_after = float(trained.compute_loss(batch)[0])
    assert loss_after < loss_before, (loss_before, loss_after)

    # The reloaded checkpoint and its LoRA-merged export give the same embeddings.
    wave, lengths = batch["item"][:4], batch["item_lengths"][:4]
    with torch.no_grad():
        emb = model(wave, lengths)
        assert export_main([str(model_dir), str(tmp_path / "merged")]) == 0
        merged, merged_cal = load_checkpoint(tmp_path / "merged")
        torch.testing.assert_close(merged(wave, lengths), emb, rtol=1e-4, atol=1e-5)
    assert merged_cal == calibration
    assert not any("lora" in n for n, _ in merged.named_parameters())

    # Same seed, same recipe: the same losses, step by step (first epoch, to save time).
    again = _metrics(_fit(corpus, tmp_path / "b", "--trainer.max_epochs", "1"))
    first = [float(r["train/loss_step"]) for r in rows
             if r.get("train/loss_step") and r["epoch"] == "0"]
    np.testing.assert_allclose(_column(again, "train/loss_step"), first, rtol=1e-5)


def test_default_small_recipe_trains_and_its_embedding_cache_is_exact(corpus, tmp_path):
    """The shipped recipe (gammatone bands, NSIM distance, bitrate term, cached embeddings) runs on
    a tiny corpus; caching the fixed embedding changes no loss and no validation figure."""
    from deepaq.training.cli import main

    def fit(run_dir: Path, *extra: str) -> list[dict]:
        code = main(["fit", "-c", str(REPO / "configs" / "train" / "default_small.yaml"),
                     "--data.manifest", str(corpus), "--trainer.max_epochs", "2",
                     "--data.batch_size", "10", "--data.conditions_per_excerpt", "5",
                     "--data.num_workers", "0", "--trainer.enable_progress_bar", "false",
                     "--trainer.log_every_n_steps", "1",
                     "--trainer.default_root_dir", str(run_dir),
                     "--trainer.logger.init_args.save_dir", str(run_dir),
                     "--model.export_dir", str(run_dir / "model"), *extra])
        assert code == 0
        return _metrics(run_dir)

    cached = fit(tmp_path / "cached")
    fresh = fit(tmp_path / "fresh", "--model.cache_embeddings", "false")
    steps = _column(cached, "train/loss_step")
    assert len(steps) >= 2 and all(map(math.isfinite, steps))
    np.testing.assert_allclose(steps, _column(fresh, "train/loss_step"), rtol=1e-5)
    np.testing.assert_allclose(_column(cached, "val/spearman"), _column(fresh, "val/spearman"),
                               rtol=1e-6)
    assert _column(cached, "train/main/bitrate_step"), "the bitrate term was not logged"
    # DeePAQ's second label on the val split: per codec, Kendall's tau of -distance vs bitrate.
    # 32 kbps MP3 against 128 kbps on real music: every val excerpt must be ordered right.
    for codec in ("mp3", "opus"):
        taus = _column(cached, f"val/kendall_bitrate_{codec}")
        assert len(taus) == 2, f"val/kendall_bitrate_{codec} not logged each epoch"
        np.testing.assert_allclose(taus, _column(fresh, f"val/kendall_bitrate_{codec}"))
    assert _column(cached, "val/kendall_bitrate_mp3") == [1.0, 1.0]
    assert (tmp_path / "cached" / "model" / "model.safetensors").is_file()


def test_embedding_cache_refuses_a_trained_embedding(corpus, tmp_path):
    from deepaq.training.cli import main

    with pytest.raises(ValueError, match="cache_embeddings"):
        main(["fit", "-c", str(TINY), "--data.manifest", str(corpus),
              "--model.cache_embeddings", "true", "--trainer.default_root_dir", str(tmp_path),
              "--trainer.logger.init_args.save_dir", str(tmp_path)])
