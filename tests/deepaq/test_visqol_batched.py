"""The batched labeller must give visqol-python's scores: every pair of a built corpus over the
full default grid, its torch path equal to its numpy path, and the same errors on unusable input.
(Upstream conformance is tests/deepaq/test_visqol.py's, run for both labellers.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deepaq.audio import AudioError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_GRID = REPO / "configs" / "data_prep" / "default_grid.yaml"
#: The issue's bar: within 1e-4 of visqol-python on the same audio.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def batched():
    from deepaq.visqol_batched import BatchedVisqolLabeller

    lab = BatchedVisqolLabeller()
    lab.warmup()
    return lab


@pytest.fixture(scope="module")
def reference_labeller():
    from deepaq.visqol import VisqolLabeller

    lab = VisqolLabeller(mode="audio")
    lab.warmup()
    return lab


def test_corpus_pairs_match_visqol_python(tmp_path, music_clip, reference_labeller):
    """A corpus built with the default (batched) labeller over all 21 default conditions: every
    manifest label is visqol-python's score of the stored files, and the provenance says which
    labeller made them."""
    import yaml

    from data_prep.pipeline import CorpusConfig, build_corpus
    from deepaq.manifest import read_manifest
    from deepaq.visqol_batched import BATCHED_IMPLEMENTATION

    src = tmp_path / "in"
    src.mkdir()
    for name, offset in (("harpsichord", 1.0), ("moonlight", 2.0)):
        sf.write(src / f"{name}.flac", music_clip(name, seconds=2.5, offset=offset).T, 48000)
    cfg = CorpusConfig(excerpt_seconds=2.5, grid=str(DEFAULT_GRID))
    assert cfg.labeller == "batched"
    result = build_corpus([str(src)], tmp_path / "c", cfg, progress=False)
    rows = read_manifest(result.manifest)
    assert len(rows) == 2 * 22
    worst = 0.0
    for row in rows:
        want = reference_labeller.score_files(tmp_path / "c" / row["reference"],
                                              tmp_path / "c" / row["path"])
        worst = max(worst, abs(want - row["visqol"]))
        assert abs(want - row["visqol"]) <= TOLERANCE, (row["key"], row["visqol"], want)
    saved = yaml.safe_load((tmp_path / "c" / "corpus.yaml").read_text())
    assert saved["labeller"] == "batched"
    assert saved["labeller_implementation"] == BATCHED_IMPLEMENTATION
    # the labels spread over the grid: a broken labeller giving one value would not pass
    assert max(r["visqol"] for r in rows) - min(r["visqol"] for r in rows) > 1.0


def test_a_batch_scores_as_its_pairs_do(batched, reference_labeller, music_clip, mp3_code):
    """Items of different lengths, a delayed copy and a shorter one, in one batch: each scores
    as it does alone and as visqol-python scores it."""
    ref = music_clip("glock", seconds=3.0, offset=0.5)
    delayed = np.concatenate([np.zeros((2, 2400), np.float32), ref[:, :-2400]], axis=1)
    items = [mp3_code(ref, 64), 0.5 * ref, delayed, ref[:, :96000], ref]
    together = batched.score_many(ref, items)
    for item, got in zip(items, together):
        assert got == pytest.approx(batched.score(ref, item), abs=1e-12)
        assert abs(got - reference_labeller.score(ref, item)) <= TOLERANCE
    assert together[-1] > together[0]


def test_svr_model_file_reproduces_libsvm():
    from visqol.api import _DEFAULT_SVR_MODEL
    from visqol.quality_mapper import SvrSimilarityToQualityMapper

    from deepaq.visqol_batched import SvrModel

    libsvm = SvrSimilarityToQualityMapper(_DEFAULT_SVR_MODEL)
    libsvm.init()
    ours = SvrModel(_DEFAULT_SVR_MODEL)
    rng = np.random.default_rng(0)
    features = np.clip(1.0 - rng.exponential(0.3, size=(20, 32)) * rng.uniform(0, 1, (20, 1)), 0.0, 1.0)
    want = [libsvm.predict_quality(f) for f in features]
    assert np.allclose(ours.predict(features), want, rtol=0, atol=1e-12)
    assert np.ptp(want) > 0.5


def test_torch_path_equals_numpy_path(batched, music_clip, mp3_code):
    """The torch backend (here on CPU torch; ``device="cuda"`` on a GPU) computes the heavy
    parts another way (FFT convolution for the filterbank) and must give the same numbers."""
    from deepaq.visqol_batched import BatchedVisqolLabeller, NumpyOps
    from deepaq.visqol_torch import TorchOps

    ref = music_clip("sopr", seconds=2.0, offset=1.0)
    items = [mp3_code(ref, 32), mp3_code(ref, 128), ref]
    on_torch = BatchedVisqolLabeller(device="cpu", backend="torch")
    assert on_torch.info()["backend"] == "torch"
    got, want = on_torch.score_many(ref, items), batched.score_many(ref, items)
    assert np.allclose(got, want, rtol=0, atol=1e-9), (got, want)

    numpy_ops, torch_ops = NumpyOps(), TorchOps("cpu")
    x = ref.mean(axis=0).astype(np.float64)
    starts = np.arange(0, len(x) - 3840, 960, dtype=np.int64)
    e_np = numpy_ops.frame_energies(x, starts, batched.hann, batched.coef)
    e_t = torch_ops.frame_energies(x, starts, batched.hann, batched.coef)
    assert np.allclose(e_t, e_np, rtol=1e-9, atol=0)
    env_np, env_t = numpy_ops.upper_envelopes(x[None]), torch_ops.upper_envelopes(x[None])
    assert np.allclose(env_t, env_np, rtol=0, atol=1e-12)
    spec = 10 * np.log10(e_np.T + 1e-12) + 120
    ref_patches = np.ascontiguousarray(np.stack([spec[:, 14:44], spec[:, 44:74]]))
    padded = np.concatenate([spec, np.zeros((32, 30))], axis=1)
    lows, highs = np.array([0, 3]), np.array([len(starts) - 1, len(starts) - 5])
    t_np = numpy_ops.search_table(ref_patches, padded, lows, highs, len(starts))
    t_t = torch_ops.search_table(ref_patches, padded, lows, highs, len(starts))
    inside = np.isfinite(t_np)
    assert (inside == np.isfinite(t_t)).all()
    assert np.allclose(t_t[inside], t_np[inside], rtol=0, atol=1e-12)


def test_unusable_inputs_raise_audio_error_naming_the_item(batched, music_clip):
    ref = music_clip("guitar", seconds=1.0)
    with pytest.raises(AudioError, match=r"degraded\[1\].*silent"):
        batched.score_many(ref, [ref, np.zeros_like(ref)])
    with pytest.raises(AudioError, match="silent"):
        batched.score_many(np.zeros_like(ref), [ref])
    bad = ref.copy()
    bad[0, 10] = np.inf
    with pytest.raises(AudioError, match="non-finite|NaN|inf"):
        batched.score_many(ref, [bad])
    with pytest.raises(AudioError, match="reference: too short"):  # visqol: a ValueError
        batched.score_many(ref[:, :3000], [ref[:, :3000]])
    assert batched.score_many(ref, []) == []


def test_labellers_by_name_and_the_metric():
    from deepaq.metrics import get_metric
    from deepaq.visqol import VisqolLabeller, labeller_implementation, make_labeller
    from deepaq.visqol_batched import BatchedVisqolLabeller

    assert isinstance(make_labeller("batched"), BatchedVisqolLabeller)
    assert isinstance(make_labeller("visqol-python"), VisqolLabeller)
    with pytest.raises(ValueError, match="CPU only"):
        make_labeller("visqol-python", "cuda")
    with pytest.raises(ValueError, match="labeller must be"):
        make_labeller("pesq")
    assert labeller_implementation("visqol-python").startswith("visqol-python==")
    assert "batched" in labeller_implementation("batched")
    assert isinstance(get_metric("visqol").labeller, BatchedVisqolLabeller)
    assert isinstance(get_metric("visqol", labeller="visqol-python").labeller, VisqolLabeller)


def test_cli_refuses_a_cuda_labeller_without_cuda(tmp_path, capsys):
    import torch

    from data_prep.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["build", str(tmp_path), "-o", str(tmp_path / "c"), "--labeller-device",
                 "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--labeller-device cuda" in err[0] and "CUDA" in err[0], err
    assert main(["build", str(tmp_path), "-o", str(tmp_path / "c"), "--labeller",
                 "visqol-python", "--labeller-device", "cuda"]) == 2
    assert "needs --labeller batched" in capsys.readouterr().err
