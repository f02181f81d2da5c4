"""``deepaq fit`` trains the ``compare`` model with MultiLabelRankLoss (the recipe
configs/train/multilabel_compare.yaml) on a real coded corpus: the same model and training code
as every other recipe, the features cached, the head learned, the export loadable."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tests.deepaq.test_training import _column, _metrics, corpus  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]


def test_multilabel_recipe_trains_the_compare_model(corpus, tmp_path):  # noqa: F811
    from deepaq.checkpoint import load_checkpoint
    from deepaq.training.cli import main

    run = tmp_path / "run"
    # the codec corpus's ladders: family = codec, level = bitrate (a corpus from the new
    # families has `family` and `level` columns and needs no override)
    code = main(["fit", "-c", str(REPO / "configs" / "train" / "default_small.yaml"),
                 "-c", str(REPO / "configs" / "train" / "multilabel_compare.yaml"),
                 "--data.manifest", str(corpus), "--trainer.max_epochs", "2",
                 "--data.batch_size", "10", "--data.conditions_per_excerpt", "5",
                 "--data.num_workers", "0", "--trainer.enable_progress_bar", "false",
                 "--trainer.log_every_n_steps", "1",
                 "--data.extra_columns", "[codec, bitrate_requested_kbps]",
                 "--model.loss.family_column", "codec",
                 "--model.loss.level_column", "bitrate_requested_kbps",
                 "--model.loss.cross_label", "visqol",
                 "--trainer.default_root_dir", str(run),
                 "--trainer.logger.init_args.save_dir", str(run),
                 "--model.export_dir", str(run / "model")])
    assert code == 0
    rows = _metrics(run)
    family = _column(rows, "train/main/family_step")
    assert family and all(map(math.isfinite, family)), "the family term was not logged"
    assert _column(rows, "train/main/cross_step"), "the cross-family term was not logged"
    model, calibration = load_checkpoint(run / "model")
    assert model.config()["distance"] == "compare" and calibration is not None
    weights = model.compare_head.linear.detach().numpy()
    assert not np.allclose(weights, 0.0), "the head did not train"
