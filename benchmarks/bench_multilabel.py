"""Multi-label training of the ``compare`` model on cached features, designs side by side (issue 15).

The ``compare`` model (``QualityModel(distance="compare")``) has a parameter-free backbone, so each
pair's comparison features (``model.comparison_features``, [K, C] per scoring window) are computed
once; the head is then trained with ``deepaq.losses.MultiLabelRankLoss`` on them, as
``bench_opus_frontier.py`` replays the default model. The training data is a corpus that
``deepaq-prep build --grid configs/data_prep/families_grid.yaml`` made (every family of the
registry, stems for the separation families, a ViSQOL label on every item); the evaluation sets
are the bvrnn MUSHRA test (validation only: never trained or selected on) and the sanity items of
``bench_listeners.py`` (the 10 real recordings with every registered family's ladder). Steps,
each cached in ``--work``:

    features   corpus rows -> features (train / val by the corpus's split; test rows count as
               val), bvrnn and the sanity items.
    baselines  per-item values of baseline metrics (``--metrics lsd,zimtohrli``) on the corpus
               items, for the cross-family labels built from them (``-LSD``, the consensus).
    fit        every design x loss variant: train on train, report val (model selection), bvrnn
               and the sanity suite, all rows; ``--export DIR`` writes the row chosen on val as a
               deepaq checkpoint folder (``bench_listeners.py --checkpoint DIR`` then measures it
               through the real scorer).
    ceiling    a bound, never a choice: the head fit on bvrnn itself (in-sample and
               leave-one-page-out): how far these features can go there at all.
    ladder     where a checkpoint misorders a sanity family (tau from each level up).

    .venv/bin/deepaq-prep render MUSIC -n 60 --max-seconds 10 --seed 7 -j 2 --stems
    .venv/bin/deepaq-prep build MUSIC/index.jsonl -o CORPUS --grid configs/data_prep/families_grid.yaml \\
        --excerpt-seconds 4 --max-excerpts-per-track 2 --splits train=0.8,val=0.2 -j 2
    .venv/bin/python benchmarks/bench_multilabel.py features --corpus CORPUS/manifest.jsonl --work W
    .venv/bin/python benchmarks/bench_multilabel.py baselines --corpus CORPUS/manifest.jsonl --work W
    .venv/bin/python benchmarks/bench_multilabel.py fit --work W [--export DIR]
    .venv/bin/python benchmarks/bench_multilabel.py ceiling --work W
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from shared_data import BVRNN

SR = 48000
WINDOW_S = 4.0
SANITY_SECONDS = 10.0  # bench_listeners' sanity excerpts
BACKBONE = {"sample_rate": SR, "windows": [3840, 2048], "bands": [32, 64], "hop_length": 960,
            "f_min": 50.0, "floor_db": -45.0, "range_db": 45.0, "level_dbfs": -20.0}
CODECS = ("opus", "mp3", "aac")


def backbone_args(work: Path, f_max: float | None = None) -> dict:
    """The backbone the work folder's features were computed with (``backbone.json``, written by
    ``features``; ``f_max``: the top band's centre, None = Nyquist)."""
    path = work / "backbone.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if f_max is not None and saved.get("f_max") != f_max:
            raise SystemExit(f"{work}: features were computed with f_max {saved.get('f_max')}")
        return saved
    return {**BACKBONE, **({"f_max": f_max} if f_max else {})}


def feature_model(args: dict):
    from deepaq.model import QualityModel

    return QualityModel(backbone="gammatone", backbone_args=args, layers=None, embed_dim=None,
                        head="none", pooling="frame", distance="compare").eval()


def mono(x: np.ndarray) -> np.ndarray:
    return x.mean(0).astype(np.float32)


@torch.no_grad()
def pair_features(model, ref: np.ndarray, degs: list[np.ndarray]) -> np.ndarray:
    """[N, W, K, C] comparison features of ``ref`` against each of ``degs`` over the scorer's
    windows, after the scorer's alignment (a corpus item is aligned already; a delay or a
    polarity inversion is not)."""
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
        d = align_to_reference(signal, mono(deg)[None], int(0.5 * SR), either_polarity=True)[0]
        dw = torch.from_numpy(np.ascontiguousarray(np.stack([d[0, s:s + win] for s in starts])))
        out.append(model.comparison_features(ref_emb, model(dw)).numpy())
    return np.stack(out)


def corpus_rows(manifest: Path) -> list[dict]:
    """The corpus's degraded rows with what the fit needs (``up``: which way the level orders
    quality, None for invariances; val holds the corpus's val and test rows)."""
    from deepaq.manifest import read_manifest

    rows = []
    for r in read_manifest(manifest):
        if r.get("family") is None:
            continue  # a clean excerpt: the reference itself
        rows.append({"key": r["key"], "excerpt": r["excerpt_id"],
                     "split": "train" if r["split"] == "train" else "val",
                     "family": r["family"], "level": float(r["level"]),
                     "up": r["level_higher_is_better"], "invariance": bool(r["invariance"]),
                     "codec": r["codec"] is not None, "visqol": r["visqol"],
                     "path": r["path"], "reference": r["reference"]})
    return rows


def by_reference(rows: list[dict]) -> dict[str, list[int]]:
    """Row indices grouped by their reference file (a clean excerpt, or a separation target)."""
    out: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        out.setdefault(r["reference"], []).append(i)
    return out


def save_set(work: Path, name: str, rows: list[dict], feats: list[np.ndarray]) -> None:
    """Items have as many scoring windows as their length gives: zero-padded to the longest
    (the head maps zeros to 0), with each row's count in ``windows``."""
    width = max(f.shape[0] for f in feats)
    padded = np.zeros((len(feats), width, *feats[0].shape[1:]), np.float32)
    for r, f, out in zip(rows, feats, padded):
        out[:f.shape[0]] = f
        r["windows"] = int(f.shape[0])
    feats = padded
    tmp = work / f"{name}.tmp.npz"
    np.savez(tmp, feats=feats, rows=json.dumps(rows))
    tmp.rename(work / f"{name}.npz")
    print(f"{name}: {feats.shape}")


def load_set(work: Path, name: str) -> tuple[list[dict], np.ndarray]:
    data = np.load(work / f"{name}.npz")
    rows = json.loads(str(data["rows"]))
    for r in rows:
        r.setdefault("windows", data["feats"].shape[1])
    return rows, data["feats"]


def sanity_items():
    """bench_listeners' sanity items, each with its audio made on demand: (rows, make(i) ->
    (clean, degraded)); identical pairs are left out (distance 0 by construction)."""
    import bench_listeners as bl

    families, items, _, recs = bl.sanity_plan(False, SANITY_SECONDS)
    items = [i for i in items if i["family"] is not None]
    rows = [{"key": i["key"], "recording": i["name"], "family": families[i["family"]]["name"],
             "level": float(i["level"]), "up": families[i["family"]]["higher_is_better"],
             "invariance": families[i["family"]]["kind"] == "invariance"} for i in items]
    return families, items, recs, rows


def cmd_features(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from deepaq.audio import read_audio, resample

    args.work.mkdir(parents=True, exist_ok=True)
    backbone = backbone_args(args.work, args.f_max)
    (args.work / "backbone.json").write_text(json.dumps(backbone))
    model = feature_model(backbone)
    torch.set_num_threads(1)   # 2 threads on the shared machine ran 15x slower
    if not (args.work / "train.npz").exists():
        if args.corpus is None:
            raise SystemExit("features: --corpus CORPUS/manifest.jsonl is required")
        folder = args.corpus.parent
        rows = corpus_rows(args.corpus)
        feats: list = [None] * len(rows)
        for ref, idx in tqdm(by_reference(rows).items(), desc="corpus", unit="reference"):
            audio = read_audio(folder / ref)[0]
            degs = [read_audio(folder / rows[i]["path"])[0] for i in idx]
            for i, f in zip(idx, pair_features(model, audio, degs)):
                feats[i] = f
        save_set(args.work, "train", rows, feats)
    if not (args.work / "bvrnn.npz").exists():
        from deepaq.records import read_table

        rows, feats = [], []
        for s in tqdm(read_table(BVRNN / "stimuli.csv"), desc="bvrnn", unit="pair"):
            ref, r1 = read_audio(BVRNN / s["reference"])
            deg, r2 = read_audio(BVRNN / s["degraded"])
            feats.append(pair_features(model, resample(ref, r1, SR), [resample(deg, r2, SR)])[0])
            rows.append({"key": s["key"], "mos": float(s["mos"])})
        save_set(args.work, "bvrnn", rows, feats)
    if not (args.work / "sanity.npz").exists():
        import bench_listeners as bl

        from deepaq.alignment import fit_length

        families, items, recs, rows = sanity_items()
        feats = []
        keep = []
        for ri, path in enumerate(tqdm(recs, desc="sanity", unit="recording")):
            clean = bl.load_excerpt(path, SANITY_SECONDS)
            other = bl.load_excerpt(recs[(ri + 1) % len(recs)], SANITY_SECONDS)
            other = fit_length(other, clean.shape[1])   # as bench_listeners cuts the interferer
            mine = [k for k, i in enumerate(items) if i["rec"] == ri]
            degs = []
            for k in mine:
                i = items[k]
                try:
                    degs.append(bl.make_item(families[i["family"]], i["level"], i["level_index"],
                                             clean, other, i["name"]))
                    keep.append(k)
                except Exception as exc:  # noqa: BLE001 - as bench_listeners: recorded, skipped
                    print(f"sanity {i['key']}: {exc}", file=sys.stderr)
            feats += list(pair_features(model, clean, degs))
        save_set(args.work, "sanity", [rows[k] for k in keep], feats)


def cmd_baselines(args: argparse.Namespace) -> None:
    """Quality (higher is better) of each corpus item by each baseline, cached per metric."""
    from tqdm import tqdm

    from deepaq.audio import read_audio
    from deepaq.metrics import get_metric
    from deepaq.records import atomic_write_text

    rows, _ = load_set(args.work, "train")
    folder = args.corpus.parent
    # cross labels are used in training only: train rows, of ``--excerpts`` excerpts (seeded)
    excerpts = sorted({r["excerpt"] for r in rows if r["split"] == "train"})
    if args.excerpts:
        order = np.random.default_rng(0).permutation(len(excerpts))[:args.excerpts]
        excerpts = [excerpts[k] for k in sorted(order)]
    wanted = set(excerpts)
    for name in args.metrics.split(","):
        path = args.work / f"baseline_{name}.json"
        done = json.loads(path.read_text()) if path.exists() else {}
        metric = get_metric(name)
        sign = 1.0 if metric.info.higher_is_better else -1.0
        groups = {ref: [i for i in idx if rows[i]["key"] not in done
                        and rows[i]["excerpt"] in wanted]
                  for ref, idx in by_reference(rows).items()}
        groups = {ref: idx for ref, idx in groups.items() if idx}
        for n, (ref, idx) in enumerate(tqdm(groups.items(), desc=name, unit="reference")):
            audio = read_audio(folder / ref)[0]
            for i in idx:
                out = metric.score(audio, read_audio(folder / rows[i]["path"])[0], SR)
                value = out["score"] if isinstance(out, dict) else out
                done[rows[i]["key"]] = sign * float(value)
            if n % 10 == 9 or n == len(groups) - 1:
                atomic_write_text(path, json.dumps(done))
        print(f"{name}: {len(done)} items in {path}")


# -- fitting -----------------------------------------------------------------------------------

class Replay(torch.nn.Module):
    """The ``compare`` model's head on cached features: ``distance(items, refs)`` = the mean over
    the item's scoring windows of the head (rows are indices into ``feats``; padded windows and
    the clean row hold zeros, which the head maps to 0)."""

    def __init__(self, feats: torch.Tensor, windows: torch.Tensor, head: torch.nn.Module):
        super().__init__()
        self.feats, self.windows, self.head = feats, windows.to(feats.dtype), head

    def all_distances(self) -> torch.Tensor:
        w = self.feats.shape[1]
        return self.head(self.feats.flatten(0, 1)).reshape(-1, w).sum(1) / self.windows

    def distance(self, items: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
        idx = items[:, 0].long()
        x = self.feats[idx]
        return (self.head(x.flatten(0, 1)).reshape(x.shape[0], x.shape[1]).sum(1)
                / self.windows[idx])


def window_counts(rows: list[dict]) -> torch.Tensor:
    return torch.tensor([r["windows"] for r in rows], dtype=torch.float32)


def fit_head(design: dict, loss_args: dict, rows: list[dict], feats: np.ndarray,
             labels: dict[str, np.ndarray], steps: int, lr: float, seed: int = 0) -> torch.nn.Module:
    """Train a head on the train rows with MultiLabelRankLoss (mini-batches of 16 excerpts)."""
    from deepaq.band_compare import FEATURES, ComparisonHead
    from deepaq.losses import MultiLabelRankLoss

    sel = [FEATURES.index(f) for f in design["features"]]
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    excerpts = sorted({rows[i]["excerpt"] for i in train})
    by_ex: dict[str, list[int]] = {e: [] for e in excerpts}
    for i in train:
        by_ex[rows[i]["excerpt"]].append(i)
    x = torch.tensor(feats[:, :, sel])                                 # [N, W, K', C]
    x = torch.cat([x, torch.zeros(1, *x.shape[1:])])                  # the clean row: index N
    clean = x.shape[0] - 1
    head = ComparisonHead(len(sel), feats.shape[-1], design["hidden"])
    model = Replay(x, torch.cat([window_counts(rows), torch.ones(1)]), head)
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
def distances(head: torch.nn.Module, rows: list[dict], feats: np.ndarray) -> np.ndarray:
    x = torch.tensor(feats[:, :, head.feature_index])
    return Replay(x, window_counts(rows), head).all_distances().numpy()


def family_taus(d: np.ndarray, rows: list[dict], unit: str) -> dict[str, float]:
    """Mean over units (excerpts/recordings) of Kendall tau(-d, goodness), per ladder family."""
    from scipy.stats import kendalltau

    groups: dict[tuple, list] = {}
    for i, r in enumerate(rows):
        if not r["invariance"]:
            groups.setdefault((r["family"], r[unit]), []).append(i)
    out: dict[str, list] = {}
    for (family, _), idx in groups.items():
        if len(idx) < 2:
            continue
        good = np.array([rows[i]["level"] * (1 if rows[i]["up"] else -1) for i in idx])
        tau = kendalltau(-d[idx], good).statistic
        out.setdefault(family, []).append(0.0 if not np.isfinite(tau) else tau)
    return {f: float(np.mean(v)) for f, v in sorted(out.items())}


def invariance_check(d: np.ndarray, rows: list[dict], unit: str) -> dict[str, float]:
    """Per invariance family: fraction of its items closer than the unit's mildest degradation."""
    mild: dict[str, float] = {}
    for i, r in enumerate(rows):
        if not r["invariance"]:
            mild[r[unit]] = min(mild.get(r[unit], math.inf), d[i])
    out: dict[str, list] = {}
    for i, r in enumerate(rows):
        if r["invariance"]:
            out.setdefault(r["family"], []).append(float(d[i] < mild[r[unit]]))
    return {f: float(np.mean(v)) for f, v in sorted(out.items())}


def evaluate(head, sets: dict) -> dict[str, float]:
    from scipy.stats import spearmanr

    rows, feats = sets["train"]
    d = distances(head, rows, feats)
    val = [i for i, r in enumerate(rows) if r["split"] == "val"]
    vrows = [rows[i] for i in val]
    taus = family_taus(d[val], vrows, "excerpt")
    inv = invariance_check(d[val], vrows, "excerpt")
    out = {"val_tau_mean": float(np.mean(list(taus.values()))),
           "val_tau_min": float(min(taus.values())),
           "val_invariance": float(np.mean(list(inv.values())))}
    for name, keep in (("val_visqol_spearman", lambda r: r["codec"]),
                       ("val_visqol_spearman_all", lambda r: not r["invariance"])):
        sel = [i for i in val if keep(rows[i]) and rows[i]["visqol"] is not None]
        if len(sel) > 3:
            out[name] = float(spearmanr(-d[sel], [rows[i]["visqol"] for i in sel]).statistic)
    brows, bfeats = sets["bvrnn"]
    out["bvrnn_spearman"] = float(spearmanr(-distances(head, brows, bfeats),
                                            [r["mos"] for r in brows]).statistic)
    srows, sfeats = sets["sanity"]
    sd = distances(head, srows, sfeats)
    staus = family_taus(sd, srows, "recording")
    out.update({f"sanity_tau_{f}": v for f, v in staus.items()})
    out["sanity_tau_min"] = float(min(staus.values()))
    out.update({f"sanity_inv_{f}": v for f, v in invariance_check(sd, srows, "recording").items()})
    return out


ALL5 = ["nsim", "abs_diff", "deficit", "excess", "modulation"]
DESIGNS = {
    "nsim band weights (deepaq-small-2's design, level-aligned)": {"features": ["nsim"],
                                                                    "hidden": 0},
    "all 5 features, band weights": {"features": ALL5, "hidden": 0},
    "all 5 features, monotone MLP head (16)": {"features": ALL5, "hidden": 16},
    "nsim + deficit + excess, monotone MLP head (16)": {"features": ["nsim", "deficit", "excess"],
                                                        "hidden": 16},
}


def percentile_rank(x: np.ndarray) -> np.ndarray:
    """Pooled rank of each finite value in [0, 1] (ties averaged); NaN stays NaN."""
    from scipy.stats import rankdata

    out = np.full(len(x), np.nan)
    ok = np.isfinite(x)
    if ok.sum() > 1:
        out[ok] = (rankdata(x[ok]) - 1) / (ok.sum() - 1)
    return out


def cross_labels(rows: list[dict], work: Path) -> dict[str, np.ndarray]:
    """Every cross-family label a loss variant may use (higher is better; NaN: no label)."""
    visqol = np.array([math.nan if r["visqol"] is None else r["visqol"] for r in rows])
    labels = {"visqol": visqol,
              "visqol_codecs": np.where([r["codec"] for r in rows], visqol, np.nan)}
    base = {}
    for path in sorted(work.glob("baseline_*.json")):
        values = json.loads(path.read_text())
        base[path.stem.removeprefix("baseline_")] = np.array(
            [values.get(r["key"], math.nan) for r in rows])
    if "lsd" in base:
        labels["neg_lsd"] = base["lsd"]
    if len(base) >= 2:
        labels["consensus"] = np.nanmean([percentile_rank(v) for v in base.values()], axis=0)
        labels["consensus_visqol"] = np.nanmean(
            [percentile_rank(v) for v in [*base.values(), visqol]], axis=0)
    return labels


def loss_variants(rows: list[dict], labels: dict) -> dict[str, dict]:
    up = {r["family"]: bool(r["up"]) for r in rows if not r["invariance"]}
    inv = sorted({r["family"] for r in rows if r["invariance"]})
    base = {"higher_is_better": up, "invariances": inv, "temperature": 0.05,
            "ratio_families": list(CODECS), "invariance_abs_weight": 0.5}
    variants = {
        "families + invariances": base,
        "+ anchor (mildest > harshest)": {**base, "anchor_weight": 1.0},
        "+ cross: ViSQOL": {**base, "cross_label": "visqol", "cross_weight": 1.0},
        "+ cross: ViSQOL, outside each ladder": {**base, "cross_label": "visqol",
                                                 "cross_weight": 1.0,
                                                 "cross_scope": "outside_ladder"},
        "+ cross: ViSQOL, across families only": {**base, "cross_label": "visqol",
                                                  "cross_weight": 1.0,
                                                  "cross_scope": "across_families"},
        "+ cross: ViSQOL, codec items only": {**base, "cross_label": "visqol_codecs",
                                              "cross_weight": 1.0},
        "+ cross: ViSQOL, weight 0.25": {**base, "cross_label": "visqol", "cross_weight": 0.25},
        "+ cross: ViSQOL, weight 0.1": {**base, "cross_label": "visqol", "cross_weight": 0.1},
        "+ cross: ViSQOL, family weight 4": {**base, "cross_label": "visqol", "cross_weight": 1.0,
                                             "family_weight": 4.0},
        "+ cross: ViSQOL, min gap 0.5 MOS": {**base, "cross_label": "visqol", "cross_weight": 1.0,
                                             "min_gap": 0.5},
        "+ cross: ViSQOL, invariance pull 2": {**base, "cross_label": "visqol",
                                               "cross_weight": 1.0, "invariance_abs_weight": 2.0},
        "+ cross: ViSQOL, invariance pull 8": {**base, "cross_label": "visqol",
                                               "cross_weight": 1.0, "invariance_abs_weight": 8.0},
        "+ cross: -LSD": {**base, "cross_label": "neg_lsd", "cross_weight": 1.0, "min_gap": 0.5},
        "+ cross: consensus of baselines": {**base, "cross_label": "consensus",
                                            "cross_weight": 1.0, "min_gap": 0.05},
        "+ cross: consensus of baselines and ViSQOL": {**base, "cross_label": "consensus_visqol",
                                                       "cross_weight": 1.0, "min_gap": 0.05},
        "+ cross: consensus of baselines and ViSQOL, outside each ladder": {
            **base, "cross_label": "consensus_visqol", "cross_weight": 1.0, "min_gap": 0.05,
            "cross_scope": "outside_ladder"},
    }
    return {k: v for k, v in variants.items() if v.get("cross_label", "visqol") in labels}


def selection_score(r: dict) -> float:
    """The export rule, written before any result: on val, mean family Kendall tau + fraction of
    invariance items below the mildest degradation + Spearman with ViSQOL on the codec items."""
    return r["val_tau_mean"] + r["val_invariance"] + r.get("val_visqol_spearman", 0.0)


def cmd_fit(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)   # 2 threads on the shared machine ran 15x slower
    sets = {name: load_set(args.work, name) for name in ("train", "bvrnn", "sanity")}
    rows, feats = sets["train"]
    labels = cross_labels(rows, args.work)
    variants = loss_variants(rows, labels)
    designs = {k: v for k, v in DESIGNS.items() if not args.designs or k in args.designs}
    results = []
    for dname, design in designs.items():
        for lname, largs in variants.items():
            if args.variants and lname not in args.variants:
                continue
            head = fit_head(design, largs, rows, feats, labels, args.steps, args.lr)
            res = {"design": dname, "loss": lname, **evaluate(head, sets)}
            results.append((res, head, design, largs))
            print(json.dumps(res), flush=True)
    from deepaq.records import atomic_write_text

    # every run adds its rows to the work folder's table (a row fitted again replaces its old one)
    path = args.work / "fit_results.json"
    table = {(r["design"], r["loss"]): r
             for r in (json.loads(path.read_text()) if path.exists() else [])}
    table.update({(r["design"], r["loss"]): r for r, *_ in results})
    atomic_write_text(path, json.dumps(list(table.values()), indent=1))
    keys = ["val_tau_mean", "val_tau_min", "val_invariance", "val_visqol_spearman",
            "bvrnn_spearman", "sanity_tau_min", "sanity_tau_opus"]
    print("\n| design | loss | " + " | ".join(keys) + " | selection |")
    print("|---|---|" + "---:|" * (len(keys) + 1))
    for r in table.values():
        print(f"| {r['design']} | {r['loss']} | "
              + " | ".join(f"{r.get(k, math.nan):.3f}" for k in keys)
              + f" | {selection_score(r):.3f} |")
    top = max(table.values(), key=selection_score)
    print(f"\nselection rule, whole table: {top['design']} / {top['loss']}")
    if args.export and results:
        best = max(results, key=lambda t: selection_score(t[0]))
        export(best, args, rows, feats)


def export(best, args, rows, feats) -> None:
    from deepaq.calibration import MonotonicCubic
    from deepaq.checkpoint import save_checkpoint
    from deepaq.model import QualityModel

    res, head, design, largs = best
    model = QualityModel(backbone="gammatone", backbone_args=backbone_args(args.work), layers=None,
                         embed_dim=None, head="none", pooling="frame", distance="compare",
                         comparison=design["features"], compare_hidden=design["hidden"])
    model.compare_head.load_state_dict(head.state_dict())
    d = distances(head, rows, feats)
    # to ViSQOL's MOS scale on coded music: the val codec items and the clean point
    labelled = [i for i, r in enumerate(rows)
                if r["split"] == "val" and r["codec"] and r["visqol"] is not None]
    calibration = MonotonicCubic().fit(np.r_[d[labelled], 0.0],
                                       np.r_[[rows[i]["visqol"] for i in labelled], 4.73]
                                       ).to_dict() if labelled else None
    metadata = {"trained_with": "benchmarks/bench_multilabel.py fit", "design": res["design"],
                "loss": res["loss"], "loss_args": largs, "window_seconds": WINDOW_S,
                "steps": args.steps, "lr": args.lr,
                "val": {k: round(v, 4) for k, v in res.items() if k.startswith("val_")}}
    save_checkpoint(model.eval(), args.export, calibration=calibration, metadata=metadata)
    print(f"exported {res['design']} / {res['loss']} to {args.export}")


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


def cmd_ladder(args: argparse.Namespace) -> None:
    """Where a checkpoint misorders one sanity family (``--family``, default opus): its Kendall tau
    over the ladder from each level up, and how often the lowest level scores closer than the
    next (the checkpoint's head on the work folder's cached sanity features)."""
    from scipy.stats import kendalltau

    from deepaq.band_compare import FEATURES
    from deepaq.checkpoint import load_checkpoint

    model, _ = load_checkpoint(args.checkpoint)
    if model.config()["backbone_args"] != backbone_args(args.work):
        raise SystemExit(f"{args.checkpoint}: its backbone differs from the one {args.work}'s "
                         "features were computed with (backbone.json)")
    head = model.compare_head
    head.feature_index = [FEATURES.index(f) for f in model.comparison]
    rows, feats = load_set(args.work, "sanity")
    d = distances(head, rows, feats)
    ladders: dict[str, list] = {}
    for i, r in enumerate(rows):
        if r["family"] == args.family:
            ladders.setdefault(r["recording"], []).append((r["level"] * (1 if r["up"] else -1),
                                                          d[i]))
    levels = sorted({lv for v in ladders.values() for lv, _ in v})
    for low in levels[:-2]:
        taus = [kendalltau([-x for lv, x in v if lv >= low], [lv for lv, _ in v if lv >= low]
                           ).statistic for v in ladders.values()]
        print(f"{args.family} from {abs(low):g} up: Kendall tau {np.mean(taus):.3f}")
    worse = sum(dict(v)[levels[0]] < dict(v)[levels[1]] for v in ladders.values())
    print(f"{abs(levels[0]):g} scored closer than {abs(levels[1]):g}: {worse} of {len(ladders)}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("features", "baselines", "fit", "ceiling", "ladder"):
        s = sub.add_parser(name)
        s.add_argument("--work", type=Path, required=True)
        s.add_argument("--corpus", type=Path, default=None,
                       help="manifest.jsonl of a deepaq-prep build with the families grid")
        s.add_argument("--metrics", default="lsd,zimtohrli", help="baselines: registry names")
        s.add_argument("--excerpts", type=int, default=0,
                       help="baselines: label this many train excerpts (0: all)")
        s.add_argument("--f-max", type=float, default=None,
                       help="features: top band centre in Hz (default: Nyquist)")
        s.add_argument("--steps", type=int, default=250)
        s.add_argument("--lr", type=float, default=0.02)
        s.add_argument("--designs", nargs="*", default=None)
        s.add_argument("--variants", nargs="*", default=None)
        s.add_argument("--export", type=Path, default=None)
        s.add_argument("--checkpoint", type=Path, default=None, help="ladder: a compare checkpoint")
        s.add_argument("--family", default="opus", help="ladder: a sanity family")
    args = p.parse_args(argv)
    {"features": cmd_features, "baselines": cmd_baselines, "fit": cmd_fit,
     "ceiling": cmd_ceiling, "ladder": cmd_ladder}[args.cmd](args)


if __name__ == "__main__":
    main()
