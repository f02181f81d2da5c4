"""Does another design over the shipped backbone order Opus by bitrate *and* keep ViSQOL's order?

Issue 7 asks for both: Kendall tau of each codec's bitrates >= 0.95 and within-reference Spearman
with ViSQOL >= 0.97, while ViSQOL itself does not order Opus by bitrate. The shipped model's only
parameters are band weights over a parameter-free backbone, so its training can be replayed on
features computed once per coded item (its dissimilarity to its own reference): this script fits
each design with the recipe's own loss (``ReferenceRankLoss`` from the recipe YAML, full batch,
AdamW at the recipe's lr) at several bitrate weights on the train split, and prints the trade-off
on the val split, as training reports it (``val/spearman_within`` counts each excerpt's clean
item; ``val/kendall_bitrate_<codec>``). Choices are made on val only: no held-out audio is read.

Designs (all distances are 0 for identical files):
- ``nsim``: the shipped design, a learned weighted mean of 1 - NSIM over the 96 bands;
- ``nsim+deficit``: plus learned weights on each band's mean level deficit (dB by which the
  degraded band falls below the reference, floored at 0): bandwidth loss, which falls
  monotonically with a codec's bitrate;
- ``nsim+visqol_svr``: plus ViSQOL v3's own audio-mode SVR (visqol-python's libsvm model) over the
  32 ViSQOL-resolution band NSIMs, as a fixed prior with a learned weight.

    .venv/bin/python benchmarks/bench_opus_frontier.py --manifest CORPUS/manifest.jsonl
        [--checkpoint checkpoints/deepaq-small] [--bitrate-weights 0 4 16 32 64]

On the shipped model's corpus (2,112 train / 528 val items) the features take ~2 min and each fit
~1 min on 2 cores.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CODECS = ("opus", "mp3", "aac")
DESIGNS = ("nsim", "nsim+deficit", "nsim+visqol_svr")


@functools.cache
def visqol_svr() -> tuple[np.ndarray, np.ndarray, float, float]:
    """(support vectors [317, 32], dual coefficients, gamma, rho) of ViSQOL v3's audio-mode SVR:
    the model file the corpus labeller loads."""
    from deepaq.visqol import _default_svr_model

    text = Path(_default_svr_model()).read_text()
    lines = text.splitlines()
    header = dict(line.split(maxsplit=1) for line in lines[:lines.index("SV")])
    coef, vectors = [], []
    for line in lines[lines.index("SV") + 1:]:
        if line.strip():
            alpha, *pairs = line.split()
            row = np.zeros(32)
            for pair in pairs:
                index, value = pair.split(":")
                row[int(index) - 1] = float(value)
            coef.append(float(alpha))
            vectors.append(row)
    return np.array(vectors), np.array(coef), float(header["gamma"]), float(header["rho"])


def svr_mos(nsim32: np.ndarray) -> np.ndarray:
    """ViSQOL's SVR over per-band mean NSIMs [N, 32] -> MOS-LQO, clipped to 1..5 as ViSQOL does."""
    vectors, coef, gamma, rho = visqol_svr()
    kernel = np.exp(-gamma * ((nsim32[:, None, :] - vectors[None]) ** 2).sum(-1))
    return np.clip(kernel @ coef - rho, 1.0, 5.0)


def item_features(rows: list[dict], root: Path, model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Per coded item vs its reference: 1 - NSIM [N, C] and level deficit [N, C] (dB)."""
    import soundfile as sf
    from tqdm import tqdm

    from deepaq.nsim import channel_nsim

    def embed(path: str) -> torch.Tensor:
        wave, _ = sf.read(root / path, dtype="float32", always_2d=True)
        with torch.no_grad():
            return model(torch.from_numpy(wave.mean(1))[None])

    nsim, deficit, refs = [], [], {}
    for row in tqdm(rows, desc="features", unit="item"):
        if row["reference"] not in refs:
            refs = {row["reference"]: embed(row["reference"])}     # rows come grouped by excerpt
        a, b = refs[row["reference"]], embed(row["path"])
        valid = torch.ones(a.shape[:2], dtype=torch.bool)
        nsim.append((1.0 - channel_nsim(a, b, valid, model.channel_blocks))[0].numpy())
        deficit.append((a - b).clamp(min=0).mean(1)[0].numpy())
    return {"nsim": np.array(nsim), "deficit": np.array(deficit)}


class _Replay(torch.nn.Module):
    """The shipped model's distance, replayed on cached features: ``distance(items, refs)``
    returns each item's learned distance to its reference (``items`` holds row indices)."""

    def __init__(self, columns: torch.Tensor, prior: torch.Tensor | None):
        super().__init__()
        self.columns = columns / columns.std(0).clamp(min=1e-9)
        self.weights = torch.nn.Parameter(torch.zeros(columns.shape[1], dtype=columns.dtype))
        self.prior = None if prior is None else prior / prior.std()
        self.prior_weight = torch.nn.Parameter(torch.zeros((), dtype=columns.dtype))

    def all_distances(self) -> torch.Tensor:
        w = torch.nn.functional.softplus(self.weights)
        d = (self.columns * w).sum(1) / w.sum()
        if self.prior is not None:
            d = d + torch.nn.functional.softplus(self.prior_weight) * self.prior
        return d

    def distance(self, items: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
        return self.all_distances()[items[:, 0].long()]


def fit(columns: np.ndarray, prior: np.ndarray | None, rows: list[dict], train: np.ndarray,
        loss_args: dict, lr: float, steps: int) -> np.ndarray:
    """Distances of every row after fitting the design on the train rows (full batch)."""
    from deepaq.losses import ReferenceRankLoss

    model = _Replay(torch.tensor(columns), None if prior is None else torch.tensor(prior))
    loss = ReferenceRankLoss(**loss_args)
    idx = np.flatnonzero(train)
    groups = torch.tensor(np.unique([rows[i]["excerpt_id"] for i in idx],
                                    return_inverse=True)[1])
    visqol = torch.tensor([float(rows[i]["visqol"]) for i in idx])
    bitrate = torch.tensor([float(rows[i]["bitrate_requested_kbps"]) for i in idx])
    codec = [rows[i]["codec"] or "" for i in idx]
    items = torch.tensor(idx, dtype=torch.float64)[:, None]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        value = loss(items, visqol, groups, bitrate, model=model, codec=codec)
        opt.zero_grad()
        value.backward()
        opt.step()
    with torch.no_grad():
        return model.all_distances().numpy()


def val_figures(d: np.ndarray, rows: list[dict], val: np.ndarray) -> dict[str, float]:
    from deepaq.evaluation import bitrate_kendall
    from deepaq.training.module import correlations

    idx = np.flatnonzero(val)
    group = np.array([rows[i]["excerpt_id"] for i in idx])
    label = np.array([float(rows[i]["visqol"]) for i in idx])
    out = correlations(d[idx], label, group)
    taus = bitrate_kendall(-d[idx], np.array([float(rows[i]["bitrate_requested_kbps"]) for i in idx]),
                           [rows[i]["codec"] or "" for i in idx], group)
    return {"spearman": out["spearman"], "within": out["spearman_within"],
            **{c: taus.get(c, math.nan) for c in CODECS}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", type=Path, required=True,
                   help="corpus manifest with ViSQOL labels and train/val splits")
    p.add_argument("--checkpoint", default=None, help="backbone to use (default: shipped)")
    p.add_argument("--recipe", type=Path, default=REPO / "configs/train/default_small.yaml")
    p.add_argument("--bitrate-weights", type=float, nargs="+", default=[0.0, 4.0, 16.0, 32.0, 64.0])
    p.add_argument("--steps", type=int, default=300, help="full-batch AdamW steps per fit")
    p.add_argument("--designs", nargs="+", choices=DESIGNS, default=list(DESIGNS))
    p.add_argument("--cache", type=Path, default=None,
                   help="npz of the features (default: next to the manifest, named by checkpoint)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)

    recipe = yaml.safe_load(args.recipe.read_text())["model"]
    loss_args = {k: v for k, v in recipe["loss"].items() if k != "class_path"}
    from deepaq.records import read_jsonl

    rows = [r for r in read_jsonl(args.manifest) if r.get("visqol") is not None and r.get("split") in ("train", "val")]
    from deepaq.scoring import Scorer

    scorer = Scorer.from_pretrained(args.checkpoint)
    cache = args.cache or args.manifest.with_name(f"opus_frontier_{scorer.checkpoint_id}.npz")
    coded = [r for r in rows if r["codec"]]
    if cache.exists():
        feats = dict(np.load(cache))
    else:
        feats = item_features(coded, args.manifest.parent, scorer.model.eval())
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, **feats)
        tmp.rename(cache)
    # clean rows join with zero features: distance 0 to themselves, as the model gives
    n_bands = feats["nsim"].shape[1]
    at = {r["key"]: i for i, r in enumerate(coded)}
    nsim = np.array([feats["nsim"][at[r["key"]]] if r["codec"] else np.zeros(n_bands) for r in rows])
    deficit = np.array([feats["deficit"][at[r["key"]]] if r["codec"] else np.zeros(n_bands)
                        for r in rows])
    mos = svr_mos(1.0 - nsim[:, :32])
    prior = svr_mos(np.ones((1, 32)))[0] - mos          # ViSQOL's MOS drop; 0 for clean items
    train = np.array([r["split"] == "train" for r in rows])
    val = ~train
    designs = {"nsim": (nsim, None), "nsim+deficit": (np.hstack([nsim, deficit]), None),
               "nsim+visqol_svr": (nsim, prior)}
    print(f"{int(train.sum())} train / {int(val.sum())} val items "
          f"({len({r['excerpt_id'] for r in rows if r['split'] == 'val'})} val excerpts), "
          f"loss {loss_args}, lr {recipe['lr']}, {args.steps} full-batch steps\n")
    print("| design | bitrate weight | val Spearman | val within-excerpt | "
          "val Kendall tau opus / mp3 / aac |")
    print("|---|---:|---:|---:|---|")
    labels = val_figures(-np.array([float(r["visqol"]) for r in rows]), rows, val)
    print("| ViSQOL's labels themselves | - | 1.000 | 1.000 | "
          + " / ".join(f"{labels[c]:.3f}" for c in CODECS) + " |")
    svr_only = val_figures(prior, rows, val)
    print(f"| ViSQOL's SVR on the backbone's NSIMs, untrained | - | {svr_only['spearman']:.3f} | "
          f"{svr_only['within']:.3f} | "
          + " / ".join(f"{svr_only[c]:.3f}" for c in CODECS) + " |")
    seconds = 0.0
    for name in args.designs:
        columns, design_prior = designs[name]
        for weight in args.bitrate_weights:
            t0 = time.perf_counter()
            d = fit(columns, design_prior, rows, train, {**loss_args, "bitrate_weight": weight},
                    recipe["lr"], args.steps)
            f = val_figures(d, rows, val)
            print(f"| {name} | {weight:g} | {f['spearman']:.3f} | {f['within']:.3f} | "
                  + " / ".join(f"{f[c]:.3f}" for c in CODECS)
                  + " |", flush=True)
            seconds += time.perf_counter() - t0
    print(f"\n{seconds:.0f} s of fitting")


if __name__ == "__main__":
    main()
