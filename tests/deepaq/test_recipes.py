"""Each related-method recipe runs in its tiny form (1 epoch on a tiny corpus), end to end through
``deepaq fit``: DAT (+ domain probe report), MultiGauss MOS head (+ head saved for scoring),
JND pretraining on a ``deepaq-prep jnd`` corpus, and the two-stage pretrain -> fine-tune pair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "configs" / "train"
TRACKS = ["guitar", "castanets", "glock", "harpsichord"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, music_file) -> Path:
    """Tiny coded corpus (real music, ViSQOL labels) plus a listening-test-like copy with two MOS
    aspect columns synthesised from ViSQOL (PQ) and ViSQOL with rater noise (CE)."""
    from data_prep.pipeline import CorpusConfig, build_corpus
    from deepaq.records import parse_float, read_jsonl, write_jsonl

    out = tmp_path_factory.mktemp("corpus")
    cfg = CorpusConfig(excerpt_seconds=1.5, max_excerpts_per_track=1, channels="mono",
                       grid=str(REPO / "configs" / "data_prep" / "tiny_grid.yaml"),
                       splits={"train": 0.5, "val": 0.5}, seed=0)
    result = build_corpus([str(music_file(t)) for t in TRACKS], out,
                          cfg, jobs=1, progress=False)
    rows = read_jsonl(result.manifest)
    rng = np.random.default_rng(0)
    for r in rows:
        v = parse_float(r["visqol"])
        r["PQ"] = round(float(np.clip(v + rng.normal(0, 0.2), 1, 5)), 3)
        r["CE"] = round(float(np.clip(0.8 * v + 0.5 + rng.normal(0, 0.4), 1, 5)), 3)
    write_jsonl(out / "mos_manifest.jsonl", rows)
    return Path(result.manifest)


def _fit(recipe: str, manifest: Path, run: Path, *extra: str) -> Path:
    from deepaq.training.cli import main

    code = main(["fit", "-c", str(RECIPES / recipe), "--data.manifest", str(manifest),
                 "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(run),
                 "--trainer.logger.init_args.save_dir", str(run),
                 "--model.export_dir", str(run / "model"), *extra])
    assert code == 0
    return run / "model"


def test_tiny_dat_recipe_trains_and_reports_the_probe(corpus, tmp_path):
    model_dir = _fit("tiny_dat.yaml", corpus, tmp_path / "dat")
    assert (model_dir / "model.safetensors").is_file()
    (report,) = (tmp_path / "dat").rglob("domain_probe.json")
    probe = json.loads(report.read_text())
    assert 0 <= probe["before"]["accuracy"] <= 1 and 0 <= probe["after"]["accuracy"] <= 1
    import csv

    (metrics,) = (tmp_path / "dat").rglob("metrics.csv")
    cols = next(csv.reader(metrics.read_text().splitlines()))
    assert "train/dat/accuracy_epoch" in cols and "train/dat/lambda_epoch" in cols


def test_tiny_multigauss_and_two_stage_recipes(corpus, tmp_path):
    from deepaq.checkpoint import load_checkpoint
    from deepaq.heads import load_head, predict_mos

    mos = corpus.parent / "mos_manifest.jsonl"
    head_dir = _fit("tiny_multigauss.yaml", mos, tmp_path / "mg")
    head = load_head(head_dir)
    assert head is not None and head.aspects == ["PQ", "CE"]

    stage1 = _fit("pretrain_rnc.yaml", corpus, tmp_path / "s1")
    stage2 = _fit("finetune_mos.yaml", mos, tmp_path / "s2", "--model.init_checkpoint",
                  str(stage1))
    m1, _ = load_checkpoint(stage1)
    m2, _ = load_checkpoint(stage2)
    assert m1.config() == m2.config()
    head = load_head(stage2)
    import torch

    wave = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, (2, 24000)).astype(np.float32))
    with torch.no_grad():
        pred = predict_mos(head, m2(wave).numpy())
    assert set(pred) == {"mos_PQ", "std_PQ", "mos_CE", "std_CE"}
    assert all(np.isfinite(v) for v in pred.values()) and pred["std_PQ"] > 0
    # fine-tuning started from stage 1: its weights moved away from stage 1's, not from random
    a = dict(m1.named_parameters())
    b = dict(m2.named_parameters())
    name = next(n for n, p in a.items() if p.requires_grad and "head" in n)
    assert not torch.equal(a[name], b[name])
    assert (a[name] - b[name]).abs().max() < a[name].abs().max()


def test_tiny_jnd_recipe(music_file, tmp_path):
    from data_prep.jnd import main as jnd_main

    out = tmp_path / "jnd"
    inputs = [str(music_file(t)) for t in TRACKS]
    assert jnd_main([*inputs, "-o", str(out), "--levels", "0:15:3", "--jnd", "3",
                     "--excerpt-seconds", "1.5", "--max-excerpts-per-track", "1",
                     "--splits", "train=0.5,val=0.5", "-q"]) == 0
    model_dir = _fit("tiny_jnd.yaml", out / "manifest.jsonl", tmp_path / "run")
    assert (model_dir / "model.safetensors").is_file()
    import csv

    (metrics,) = (tmp_path / "run").rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.read_text().splitlines()))
    pull = [float(r["train/main/pull_epoch"]) for r in rows if r.get("train/main/pull_epoch")]
    spearman = [float(r["val/spearman"]) for r in rows if r.get("val/spearman")]
    assert pull and np.isfinite(pull).all() and spearman and -1 <= spearman[0] <= 1
