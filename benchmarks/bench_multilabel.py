"""Multi-label training of the ``compare`` model on cached features, designs side by side (issue 15).

The ``compare`` model (``QualityModel(distance="compare")``) has a parameter-free backbone, so each
pair's comparison features (``model.comparison_features``, [K, C] per scoring window) are computed
once; the head is then trained with ``deepaq.losses.MultiLabelRankLoss`` on them, as
``bench_opus_frontier.py`` replays the default model. Three steps, each cached in ``--work``:

    features  rendered music (``deepaq-prep render`` output) -> 4 s excerpts, split by piece
              80/20 into train/val, each with the ladders of ``multilabel_ladders.py``; and the
              evaluation sets: the bvrnn MUSHRA test (validation only: never trained or selected
              on) and the sanity suite on the 10 real recordings (ladders of every family).
    visqol    ViSQOL v3 labels for a small subset (codec items + mid levels of a few train
              excerpts, codec items of a few val excerpts): the with-ViSQOL variant and the
              calibration to the ViSQOL scale.
    fit       every design x loss variant: train on train, report val (model selection), bvrnn
              and the sanity suite, all rows; ``--export DIR`` writes the design chosen on val
              as a deepaq checkpoint folder.
    checkpoints  exported checkpoints (``--checkpoint NAME=DIR``) through the real scorer on
              bvrnn and the sanity suite, with -LSD; invariances as calibrated MOS changes.
    ceiling   a bound, never a choice: the head fit on bvrnn itself (in-sample and
              leave-one-page-out): how far these features can go there at all.

    .venv/bin/python benchmarks/bench_multilabel.py features --music MUSIC/index.jsonl --work W
    .venv/bin/python benchmarks/bench_multilabel.py visqol --work W
    .venv/bin/python benchmarks/bench_multilabel.py fit --work W [--export checkpoints/deepaq-small-3]
    .venv/bin/python benchmarks/bench_multilabel.py checkpoints --work W \\
        --checkpoint deepaq-small-2=checkpoints/deepaq-small --checkpoint new=checkpoints/deepaq-small-3
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from shared_data import BVRNN, RECORDINGS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
REAL = RECORDINGS
SR = 48000
EXCERPT_S, WINDOW_S = 4.0, 4.0
BACKBONE = {"sample_rate": SR, "windows": [3840, 2048], "bands": [32, 64], "hop_length": 960,
            "f_min": 50.0, "floor_db": -45.0, "range_db": 45.0, "level_dbfs": -20.0}


def feature_model():
    from deepaq.model import QualityModel

    return QualityModel(backbone="gammatone", backbone_args=BACKBONE, layers=None, embed_dim=None,
                        head="none", pooling="frame", distance="compare").eval()


def mono(x: np.ndarray) -> np.ndarray:
    return x.mean(0).astype(np.float32)


@torch.no_grad()
def pair_features(model, ref: np.ndarray, degs: list[np.ndarray], align: bool = True) -> np.ndarray:
    """[N, W, K, C] comparison features of ``ref`` against each of ``degs`` over the scorer's
    windows (after its alignment; ladders built sample-aligned may skip it)."""
    from deepaq.alignment import ReferenceSignal, align_to_reference
    from deepaq.scoring import window_starts

    r = mono(ref)[None]
    signal = ReferenceSignal(r)
    n = r.shape[1]
    win = min(int(WINDOW_S * SR), n)
    starts = window_starts(n, win, win)
    ref_emb = model(torch.from_numpy(np.stack([r[0, s:s + win] for s in starts])))
    out = []
    for deg in degs:
        d = mono(deg)[None]
        d = align_to_reference(signal, d, int(0.5 * SR))[0] if align else d[:, :n]
        dw = torch.from_numpy(np.ascontiguousarray(np.stack([d[0, s:s + win] for s in starts])))
        out.append(model.comparison_features(ref_emb, model(dw)).numpy())
    return np.stack(out)


def lsd_db(ref: np.ndarray, deg: np.ndarray) -> float:
    """Log-spectral distance (STFT 2048/512, dB), the issue's baseline; a cross-family label."""
    from scipy.signal import stft

    _, _, a = stft(mono(ref), nperseg=2048, noverlap=1536)
    _, _, b = stft(mono(deg), nperseg=2048, noverlap=1536)
    la = 10 * np.log10(np.abs(a) ** 2 + 1e-10)
    lb = 10 * np.log10(np.abs(b) ** 2 + 1e-10)
    return float(np.mean(np.sqrt(np.mean((la - lb) ** 2, axis=0))))


def training_excerpts(music_index: Path, seed: int = 0) -> list[dict]:
    from deepaq.audio import read_audio
    from deepaq.records import read_jsonl

    pieces = list(read_jsonl(music_index))
    order = np.random.default_rng(seed).permutation(len(pieces))
    n_val = max(1, round(0.2 * len(pieces)))
    split = {int(i): ("val" if k < n_val else "train") for k, i in enumerate(order)}
    out = []
    for i, piece in enumerate(pieces):
        audio, rate = read_audio(music_index.parent / piece["path"])
        for j, start in enumerate((3.0,)):
            a = audio[:, int(start * rate):int((start + EXCERPT_S) * rate)]
            if a.shape[1] == int(EXCERPT_S * rate):
                out.append({"excerpt": f"{piece['key']}@{start:g}", "piece": piece["key"],
                            "split": split[i], "audio": a, "index": len(out), "seed": 1000 * i + j})
    return out


def cmd_features(args: argparse.Namespace) -> None:
    from multilabel_ladders import ladder
    from tqdm import tqdm

    from deepaq.audio import read_audio, resample

    args.work.mkdir(parents=True, exist_ok=True)
    model = feature_model()
    torch.set_num_threads(1)   # 2 threads on the shared machine ran 15x slower
    sets = {}
    if not (args.work / "train.npz").exists():
        excerpts = training_excerpts(args.music)
        rows, feats = [], []
        for ex in tqdm(excerpts, desc="train/val ladders", unit="excerpt"):
            other = excerpts[(ex["index"] + 7) % len(excerpts)]["audio"]
            items = ladder(ex["audio"], other, ex["seed"])
            for family, level, deg in items:
                rows.append({"excerpt": ex["excerpt"], "split": ex["split"], "family": family,
                             "level": level, "lsd": lsd_db(ex["audio"], deg)})
            # only the delay needs the scorer's alignment: the rest are built sample-aligned
            feats += list(pair_features(model, ex["audio"], [d for f, _, d in items if f != "delay"],
                                        align=False))
            feats.insert(len(feats) - len(items) + [f for f, _, _ in items].index("delay"),
                         pair_features(model, ex["audio"], [d for f, _, d in items
                                                            if f == "delay"])[0])
        sets["train"] = (rows, np.array(feats, np.float32))
    if not (args.work / "bvrnn.npz").exists():
        import csv

        rows, feats = [], []
        with open(BVRNN / "stimuli.csv") as f:
            stimuli = list(csv.DictReader(f))
        for s in tqdm(stimuli, desc="bvrnn", unit="pair"):
            ref, r1 = read_audio(BVRNN / s["reference"])
            deg, r2 = read_audio(BVRNN / s["degraded"])
            feats.append(pair_features(model, resample(ref, r1, SR), [resample(deg, r2, SR)])[0])
            rows.append({"key": s["key"], "mos": float(s["mos"])})
        sets["bvrnn"] = (rows, np.array(feats, np.float32))
    if not (args.work / "sanity.npz").exists():
        from multilabel_ladders import codec_specs

        files = sorted(REAL.glob("*48_stereo.wav"))
        clips = [read_audio(p)[0][:, :int(8 * SR)] for p in files]
        rows, feats = [], []
        specs = codec_specs((16, 24, 32, 48, 64, 96, 128))
        for i, (path, clip) in enumerate(tqdm(list(zip(files, clips)), desc="sanity", unit="rec")):
            other = clips[(i + 1) % len(clips)]
            if other.shape[1] < clip.shape[1]:
                other = np.tile(other, (1, 2))
            items = ladder(clip, other, 77 + i, codecs=specs)
            feats += list(pair_features(model, clip, [d for _, _, d in items]))
            rows += [{"recording": path.stem, "family": f, "level": lv} for f, lv, _ in items]
        sets["sanity"] = (rows, np.array(feats, np.float32))
    for name, (rows, feats) in sets.items():
        tmp = args.work / f"{name}.tmp.npz"
        np.savez(tmp, feats=feats, rows=json.dumps(rows))
        tmp.rename(args.work / f"{name}.npz")
        print(f"{name}: {feats.shape}")


def load_set(work: Path, name: str) -> tuple[list[dict], np.ndarray]:
    data = np.load(work / f"{name}.npz")
    return json.loads(str(data["rows"])), data["feats"]


def visqol_subset(rows: list[dict], per_split: int = 8) -> list[int]:
    """Indices to label: codec items + level index 1 of each family, first excerpts per split."""
    chosen, seen = [], {"train": [], "val": []}
    for r in rows:
        if r["excerpt"] not in seen[r["split"]]:
            seen[r["split"]].append(r["excerpt"])
    keep = {e for s in seen.values() for e in s[:per_split]}
    levels: dict[tuple, list] = {}
    for r in rows:
        levels.setdefault((r["excerpt"], r["family"]), []).append(r["level"])
    for i, r in enumerate(rows):
        if r["excerpt"] not in keep:
            continue
        if r["family"] in ("opus", "mp3", "aac") or r["split"] == "train" and len(levels[(r["excerpt"], r["family"])]) >= 4 \
                and r["level"] == levels[(r["excerpt"], r["family"])][1]:
            chosen.append(i)
    return chosen


def cmd_visqol(args: argparse.Namespace) -> None:
    from multilabel_ladders import ladder
    from tqdm import tqdm

    from deepaq.visqol import VisqolLabeller

    rows, _ = load_set(args.work, "train")
    out_path = args.work / "visqol.json"
    done = json.loads(out_path.read_text()) if out_path.exists() else {}
    todo = [i for i in visqol_subset(rows, args.per_split) if str(i) not in done]
    excerpts = {e["excerpt"]: e for e in training_excerpts(args.music)}
    ordered = list(excerpts.values())
    labeller = VisqolLabeller()
    by_excerpt: dict[str, list[int]] = {}
    for i in todo:
        by_excerpt.setdefault(rows[i]["excerpt"], []).append(i)
    for name, idx in tqdm(by_excerpt.items(), desc="visqol", unit="excerpt"):
        ex = excerpts[name]
        other = ordered[(ex["index"] + 7) % len(ordered)]["audio"]
        items = ladder(ex["audio"], other, ex["seed"])
        first = next(k for k, r in enumerate(rows) if r["excerpt"] == name)
        for i in idx:
            family, level, deg = items[i - first]
            assert (family, level) == (rows[i]["family"], rows[i]["level"])
            done[str(i)] = labeller.score(ex["audio"], deg, SR)
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(done))
        tmp.rename(out_path)
    print(f"{len(done)} ViSQOL labels in {out_path}")


# -- fitting -----------------------------------------------------------------------------------

class Replay(torch.nn.Module):
    """The ``compare`` model's head on cached features: ``distance(items, refs)`` = head of the
    item's features (rows are indices into ``feats``; clean rows hold zeros: distance 0)."""

    def __init__(self, feats: torch.Tensor, head: torch.nn.Module):
        super().__init__()
        self.feats, self.head = feats, head

    def all_distances(self) -> torch.Tensor:
        w = self.feats.shape[1]
        return self.head(self.feats.flatten(0, 1)).reshape(-1, w).mean(1)

    def distance(self, items: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
        x = self.feats[items[:, 0].long()]
        return self.head(x.flatten(0, 1)).reshape(x.shape[0], x.shape[1]).mean(1)


def make_head(design: dict, k: int, c: int) -> torch.nn.Module:
    from deepaq.band_compare import ComparisonHead

    return ComparisonHead(k, c, design["hidden"])


def fit_head(design: dict, loss_args: dict, rows: list[dict], feats: np.ndarray,
             labels: dict[str, np.ndarray], steps: int, lr: float, seed: int = 0) -> torch.nn.Module:
    """Train a head on the train rows with MultiLabelRankLoss (mini-batches of excerpts)."""
    from deepaq.band_compare import FEATURES
    from deepaq.losses import MultiLabelRankLoss

    sel = [FEATURES.index(f) for f in design["features"]]
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    excerpts = sorted({rows[i]["excerpt"] for i in train})
    by_ex = {e: [] for e in excerpts}
    for i in train:
        by_ex[rows[i]["excerpt"]].append(i)
    x = torch.tensor(feats[:, :, sel])                                 # [N, W, K', C]
    x = torch.cat([x, torch.zeros(1, *x.shape[1:])])                  # the clean row: index N
    clean = x.shape[0] - 1
    head = make_head(design, len(sel), feats.shape[-1])
    model = Replay(x, head)
    loss = MultiLabelRankLoss(**loss_args)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        chosen = rng.choice(len(excerpts), size=min(16, len(excerpts)), replace=False)
        idx, groups, family, level, coded = [], [], [], [], []
        for g, e in enumerate(chosen):
            members = by_ex[excerpts[e]]
            idx += [clean] + members
            groups += [g] * (len(members) + 1)
            family += [""] + [rows[i]["family"] for i in members]
            level += [math.nan] + [rows[i]["level"] for i in members]
            coded += [False] + [True] * len(members)
        batch = {"family": family, "level": level, "coded": torch.tensor(coded)}
        for name, values in labels.items():
            batch[name] = [math.nan if i == clean else float(values[i]) for i in idx]
        value = loss(torch.tensor(idx, dtype=torch.float64)[:, None], torch.tensor(groups),
                     batch, model=model)
        opt.zero_grad()
        value.backward()
        opt.step()
    head.eval()
    head.feature_index = sel
    return head


@torch.no_grad()
def distances(head: torch.nn.Module, feats: np.ndarray) -> np.ndarray:
    x = torch.tensor(feats[:, :, head.feature_index])
    return Replay(x, head).all_distances().numpy()


def family_taus(d: np.ndarray, rows: list[dict], unit: str) -> dict[str, float]:
    """Mean over units (excerpts/recordings) of Kendall tau(-d, goodness), per ladder family."""
    from multilabel_ladders import higher_is_better
    from scipy.stats import kendalltau

    up = higher_is_better()
    groups: dict[tuple, list] = {}
    for i, r in enumerate(rows):
        if r["family"] in up:
            groups.setdefault((r["family"], r[unit]), []).append(i)
    out: dict[str, list] = {}
    for (family, _), idx in groups.items():
        good = np.array([rows[i]["level"] for i in idx]) * (1 if up[family] else -1)
        tau = kendalltau(-d[idx], good).statistic
        out.setdefault(family, []).append(0.0 if not np.isfinite(tau) else tau)
    return {f: float(np.mean(v)) for f, v in sorted(out.items())}


def invariance_check(d: np.ndarray, rows: list[dict], unit: str) -> dict[str, float]:
    """Per invariance family: fraction of its items closer than the unit's mildest degradation."""
    from multilabel_ladders import higher_is_better

    up = higher_is_better()
    mild: dict[str, float] = {}
    for i, r in enumerate(rows):
        if r["family"] in up:
            mild[r[unit]] = min(mild.get(r[unit], math.inf), d[i])
    out: dict[str, list] = {}
    for i, r in enumerate(rows):
        if r["family"] not in up:
            out.setdefault(r["family"], []).append(float(d[i] < mild[r[unit]]))
    return {f: float(np.mean(v)) for f, v in sorted(out.items())}


def evaluate(head, sets: dict, visqol: dict[int, float]) -> dict[str, float]:
    from scipy.stats import spearmanr

    rows, feats = sets["train"]
    d = distances(head, feats)
    val = [i for i, r in enumerate(rows) if r["split"] == "val"]
    vrows = [rows[i] for i in val]
    taus = family_taus(d[val], vrows, "excerpt")
    inv = invariance_check(d[val], vrows, "excerpt")
    out = {"val_tau_mean": float(np.mean(list(taus.values()))),
           "val_tau_min": float(min(taus.values())),
           "val_invariance": float(np.mean(list(inv.values())))}
    labelled = [i for i in val if i in visqol]
    if len(labelled) > 3:
        out["val_visqol_spearman"] = float(spearmanr(-d[labelled],
                                                     [visqol[i] for i in labelled]).statistic)
    brows, bfeats = sets["bvrnn"]
    out["bvrnn_spearman"] = float(spearmanr(-distances(head, bfeats),
                                            [r["mos"] for r in brows]).statistic)
    srows, sfeats = sets["sanity"]
    sd = distances(head, sfeats)
    staus = family_taus(sd, srows, "recording")
    out.update({f"sanity_tau_{f}": v for f, v in staus.items()})
    out["sanity_tau_min"] = float(min(staus.values()))
    out.update({f"sanity_inv_{f}": v for f, v in invariance_check(sd, srows, "recording").items()})
    return out


DESIGNS = {
    "nsim band weights (deepaq-small-2's design, level-aligned)": {"features": ["nsim"],
                                                                    "hidden": 0},
    "all 5 features, band weights": {"features": ["nsim", "abs_diff", "deficit", "excess",
                                                   "modulation"], "hidden": 0},
    "all 5 features, monotone MLP head (16)": {"features": ["nsim", "abs_diff", "deficit", "excess",
                                                    "modulation"], "hidden": 16},
    "nsim + deficit + excess, monotone MLP head (16)": {"features": ["nsim", "deficit", "excess"],
                                               "hidden": 16},
}


def loss_variants(up: dict, inv: list) -> dict[str, dict]:
    base = {"higher_is_better": up, "invariances": inv, "temperature": 0.05,
            "ratio_families": ["opus", "mp3", "aac"], "invariance_abs_weight": 0.5}
    return {
        "families + invariances": base,
        "+ anchor (mildest > harshest)": {**base, "anchor_weight": 1.0},
        "+ cross: -LSD": {**base, "cross_label": "neg_lsd", "cross_weight": 1.0, "min_gap": 0.5},
        "+ cross: ViSQOL (subset)": {**base, "cross_label": "visqol", "cross_weight": 1.0},
    }


def cmd_fit(args: argparse.Namespace) -> None:
    from multilabel_ladders import INVARIANCES, higher_is_better

    torch.set_num_threads(1)   # 2 threads on the shared machine ran 15x slower
    sets = {name: load_set(args.work, name) for name in ("train", "bvrnn", "sanity")}
    rows, _ = sets["train"]
    vpath = args.work / "visqol.json"
    visqol = {int(k): v for k, v in json.loads(vpath.read_text()).items()} if vpath.exists() \
        else {}
    labels = {"neg_lsd": np.array([-r["lsd"] for r in rows]),
              "visqol": np.array([visqol.get(i, math.nan) for i in range(len(rows))])}
    variants = loss_variants(higher_is_better(), list(INVARIANCES))
    if not visqol:
        variants.pop("+ cross: ViSQOL (subset)")
    designs = {k: v for k, v in DESIGNS.items() if not args.designs or k in args.designs}
    results = []
    for dname, design in designs.items():
        for lname, largs in variants.items():
            if args.variants and lname not in args.variants:
                continue
            head = fit_head(design, largs, rows, sets["train"][1], labels, args.steps, args.lr)
            res = {"design": dname, "loss": lname, **evaluate(head, sets, visqol)}
            results.append((res, head, design, largs))
            print(json.dumps(res), flush=True)
    (args.work / "fit_results.json").write_text(json.dumps([r for r, *_ in results], indent=1))
    keys = ["val_tau_mean", "val_tau_min", "val_invariance", "val_visqol_spearman",
            "bvrnn_spearman", "sanity_tau_min"]
    print("\n| design | loss | " + " | ".join(keys) + " |")
    print("|---|---|" + "---:|" * len(keys))
    for r, *_ in results:
        print(f"| {r['design']} | {r['loss']} | "
              + " | ".join(f"{r.get(k, math.nan):.3f}" for k in keys) + " |")
    if args.export:
        # selection on val only: mean family tau + invariance fraction + agreement with ViSQOL
        # on the labelled val codec items (the coded-music target); docs/model_design.md
        # reports what the criterion without the ViSQOL part picks
        def score(r):
            return r["val_tau_mean"] + r["val_invariance"] + r.get("val_visqol_spearman", 0.0)
        best = max(results, key=lambda t: score(t[0]))
        export(best, args, rows, sets["train"][1], visqol)


def export(best, args, rows, feats, visqol) -> None:
    from deepaq.calibration import MonotonicCubic
    from deepaq.checkpoint import save_checkpoint
    from deepaq.model import QualityModel

    res, head, design, largs = best
    model = QualityModel(backbone="gammatone", backbone_args=BACKBONE, layers=None,
                         embed_dim=None, head="none", pooling="frame", distance="compare",
                         comparison=design["features"], compare_hidden=design["hidden"])
    model.compare_head.load_state_dict(head.state_dict())
    d = distances(head, feats)
    labelled = [i for i in sorted(visqol) if rows[i]["split"] == "val"]
    calibration = MonotonicCubic().fit(np.r_[d[labelled], 0.0],
                                       np.r_[[visqol[i] for i in labelled], 4.73]).to_dict() \
        if labelled else None
    metadata = {"trained_with": "benchmarks/bench_multilabel.py fit", "design": res["design"],
                "loss": res["loss"], "loss_args": largs, "window_seconds": WINDOW_S,
                "val": {k: round(v, 4) for k, v in res.items() if k.startswith("val_")}}
    save_checkpoint(model.eval(), args.export, calibration=calibration, metadata=metadata)
    print(f"exported {res['design']} / {res['loss']} to {args.export}")


def cmd_checkpoints(args: argparse.Namespace) -> None:
    """Score checkpoints through ``deepaq.scoring.Scorer`` (the real scoring path) and -LSD on
    bvrnn and the sanity suite, side by side; invariances as calibrated MOS changes."""
    import csv

    from multilabel_ladders import codec_specs, ladder
    from scipy.stats import spearmanr
    from tqdm import tqdm

    from deepaq.audio import read_audio
    from deepaq.scoring import Scorer

    torch.set_num_threads(1)
    scorers = {name: Scorer.from_pretrained(path, device="cpu")
               for name, path in (c.split("=", 1) for c in args.checkpoint)}
    with open(BVRNN / "stimuli.csv") as f:
        stimuli = list(csv.DictReader(f))
    results: dict[str, dict] = {name: {} for name in [*scorers, "-LSD"]}
    mos = [float(s["mos"]) for s in stimuli]
    for name, scorer in scorers.items():
        d = [scorer.score(str(BVRNN / s["reference"]), str(BVRNN / s["degraded"])).distance
             for s in tqdm(stimuli, desc=f"bvrnn {name}", unit="pair")]
        results[name]["bvrnn_spearman"] = float(spearmanr(-np.array(d), mos).statistic)
    files = sorted(REAL.glob("*48_stereo.wav"))
    clips = [read_audio(p)[0][:, :int(8 * SR)] for p in files]
    specs = codec_specs((16, 24, 32, 48, 64, 96, 128))
    rows, dist, calibrated = [], {n: [] for n in results}, {n: [] for n in scorers}
    for i, (path, clip) in enumerate(tqdm(list(zip(files, clips)), desc="sanity", unit="rec")):
        other = clips[(i + 1) % len(clips)]
        if other.shape[1] < clip.shape[1]:
            other = np.tile(other, (1, 2))
        items = ladder(clip, other, 77 + i, codecs=specs)
        for name, scorer in scorers.items():
            clean = scorer.score(clip, clip, sample_rate=SR).mos
            for _, _, deg in items:
                r = scorer.score(clip, deg, sample_rate=SR)
                dist[name].append(r.distance)
                calibrated[name].append(np.nan if r.mos is None else r.mos - clean)
        dist["-LSD"] += [lsd_db(clip, deg) for _, _, deg in items]
        rows += [{"recording": path.stem, "family": f, "level": lv} for f, lv, _ in items]
    for name, result in results.items():
        d = np.array(dist[name])
        taus = family_taus(d, rows, "recording")
        result.update({f"sanity_tau_{f}": v for f, v in taus.items()})
        result["sanity_tau_min"] = float(min(taus.values()))
        result.update({f"sanity_inv_{f}": v
                       for f, v in invariance_check(d, rows, "recording").items()})
        if name in calibrated:
            change = np.abs(np.array(calibrated[name]))
            for family in ("gain", "polarity", "resample_roundtrip", "delay"):
                sel = [k for k, r in enumerate(rows) if r["family"] == family]
                result[f"max_mos_change_{family}"] = float(np.nanmax(change[sel]))
    (args.work / "checkpoint_results.json").write_text(json.dumps(results, indent=1))
    keys = sorted({k for r in results.values() for k in r})
    print("| metric | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{r.get(k, math.nan):.3f}" for r in results.values())
              + " |")


def cmd_ceiling(args: argparse.Namespace) -> None:
    """How far can these features go on bvrnn at all? A ceiling, never a choice: the head is fit
    on bvrnn's own MOS (logistic ranking of all pairs), in-sample and leave-one-page-out (each
    page's 7 stimuli scored by a head fit on the other 15 pages)."""
    from scipy.stats import spearmanr

    from deepaq.band_compare import FEATURES, ComparisonHead

    torch.set_num_threads(1)
    rows, feats = load_set(args.work, "bvrnn")
    x = torch.tensor(feats[:, 0])
    mos = torch.tensor([r["mos"] for r in rows], dtype=torch.float32)
    page = np.array([r["key"].split("/")[0] for r in rows])

    def fit_on(idx: np.ndarray, hidden: int, cols: list[int]) -> ComparisonHead:
        head = ComparisonHead(len(cols), x.shape[-1], hidden)
        opt = torch.optim.AdamW(head.parameters(), lr=0.02, weight_decay=1e-4)
        xi, yi = x[idx][:, cols], mos[idx]
        better = yi[:, None] > yi[None, :]
        for _ in range(args.steps):
            d = head(xi)
            d = d / d.mean().clamp(min=1e-8)
            loss = torch.nn.functional.softplus((d[:, None] - d[None, :]) / 0.05)[better].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return head

    print("| features | head | in-sample Spearman | leave-one-page-out Spearman |")
    print("|---|---|---:|---:|")
    for names in (["nsim"], ["deficit"], list(FEATURES)):
        cols = [FEATURES.index(n) for n in names]
        for hidden in (0, 16):
            full = fit_on(np.arange(len(rows)), hidden, cols)
            with torch.no_grad():
                ins = spearmanr(-full(x[:, cols]).numpy(), mos).statistic
            pred = np.zeros(len(rows))
            for p in np.unique(page):
                held = page == p
                head = fit_on(np.flatnonzero(~held), hidden, cols)
                with torch.no_grad():
                    d = head(x[:, cols]).numpy()
                # scale each fold's distances by its train mean so folds are comparable
                pred[held] = d[held] / d[~held].mean()
            loo = spearmanr(-pred, mos).statistic
            print(f"| {' + '.join(names)} | {'band weights' if hidden == 0 else 'monotone MLP'}"
                  f" | {ins:.3f} | {loo:.3f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("features", "visqol", "fit", "checkpoints", "ceiling"):
        s = sub.add_parser(name)
        s.add_argument("--work", type=Path, required=True)
        s.add_argument("--music", type=Path, default=None, help="deepaq-prep render index.jsonl")
        s.add_argument("--per-split", type=int, default=8)
        s.add_argument("--steps", type=int, default=400)
        s.add_argument("--lr", type=float, default=0.02)
        s.add_argument("--designs", nargs="*", default=None)
        s.add_argument("--variants", nargs="*", default=None)
        s.add_argument("--export", type=Path, default=None)
        s.add_argument("--checkpoint", action="append", default=[],
                       help="checkpoints: NAME=FOLDER, repeatable")
    args = p.parse_args(argv)
    {"features": cmd_features, "visqol": cmd_visqol, "fit": cmd_fit,
     "checkpoints": cmd_checkpoints, "ceiling": cmd_ceiling}[args.cmd](args)


if __name__ == "__main__":
    main()
