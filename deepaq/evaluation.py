"""Correlate metrics with listening-test MOS: raw, cubic-mapped and MLP-mapped, out of sample.

Why this shape: a metric's raw PCC depends on how linear it is; the ITU practice (P.1401) maps it to
MOS with a monotonic cubic first. A mapping fitted on the same items it is judged on flatters the
metric, so both mappings (a monotonic cubic and a small MLP) are fitted with k-fold cross-validation
and every reported mapped figure comes from predictions on held-out folds. Confidence intervals are
percentile bootstraps over items. Distances (lower is better) are negated before correlating, so
every reported correlation is in the quality-oriented direction (positive = agrees with MOS); the
table's ``sign`` column says which metrics were negated.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

Fitter = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]
POOLED = "pooled"


# -- mappings ---------------------------------------------------------------------------------------
def fit_cubic(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    from deepaq.calibration import MonotonicCubic

    return MonotonicCubic().fit(x, y)


def fit_mlp(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A 1-8-1 tanh MLP on standardised x (L-BFGS): flexible but still a smooth map."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor
    from threadpoolctl import threadpool_limits

    mu, sd = float(np.mean(x)), float(np.std(x)) or 1.0
    ymu, ysd = float(np.mean(y)), float(np.std(y)) or 1.0
    net = MLPRegressor(hidden_layer_sizes=(8,), activation="tanh", solver="lbfgs", alpha=1e-2,
                       max_iter=200, random_state=seed)
    # One BLAS thread: the matrices are tiny and multi-threaded BLAS only spins (10x slower).
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # 200 L-BFGS steps suffice in 1-D
        net.fit(((x - mu) / sd)[:, None], (y - ymu) / ysd)
    return lambda z: net.predict(((np.asarray(z, dtype=np.float64) - mu) / sd)[:, None]) * ysd + ymu


def kfold_indices(n: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k folds as (train, test) index arrays; every item is in exactly one test fold."""
    k = max(2, min(k, n))
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(perm, k)
    return [(np.sort(np.concatenate([f for j, f in enumerate(folds) if j != i])), np.sort(folds[i]))
            for i in range(k)]


def cv_predict(x: np.ndarray, y: np.ndarray, fitter: Fitter, k: int = 5, seed: int = 0
               ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Out-of-fold predictions: each item is predicted by a map fitted without its fold."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    pred = np.full(x.shape, np.nan)
    folds = kfold_indices(len(x), k, seed)
    for train, test in folds:
        mapping = fitter(x[train], y[train])
        pred[test] = mapping(x[test])
    return pred, folds


# -- statistics -------------------------------------------------------------------------------------
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import pearsonr

    if np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(pearsonr(a, b)[0])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(spearmanr(a, b)[0])


def _kendall_tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """scipy's default Kendall tau-b over all pairs, for the short bitrate ladders (7 items)
    where scipy's per-call overhead is most of the time; NaN when either side is all ties."""
    i, j = np.triu_indices(len(a), 1)
    sa, sb = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    norm = math.sqrt(np.count_nonzero(sa) * np.count_nonzero(sb))
    return float(np.sum(sa * sb) / norm) if norm else math.nan


def bitrate_kendall(quality: np.ndarray, kbps: np.ndarray, codec: Sequence[str],
                    group: Sequence[Any]) -> dict[str, float]:
    """Per codec: mean over groups (excerpts) of Kendall's tau between quality and coded bitrate.

    Why: the bitrate is DeePAQ's second weak label; within one excerpt and one codec a higher
    bitrate should not sound worse, and ViSQOL's labels do not always say so (Opus above all).
    Items without a codec (clean) and groups with fewer than two bitrates of a codec are skipped;
    a tied group (all qualities equal) counts as NaN and is left out of the mean.
    """
    quality, kbps = np.asarray(quality, dtype=float), np.asarray(kbps, dtype=float)
    members: dict[tuple[str, Any], list[int]] = {}      # one pass: large val sets stay linear
    for i, (name, g) in enumerate(zip(codec, group)):
        if name and math.isfinite(quality[i]) and math.isfinite(kbps[i]):
            members.setdefault((str(name), g), []).append(i)
    taus: dict[str, list[float]] = {}
    for (name, _), index in sorted(members.items(), key=lambda kv: kv[0][0]):
        if len(index) >= 2 and np.ptp(kbps[index]) > 0:
            tau = _kendall_tau_b(quality[index], kbps[index])
            taus.setdefault(name, [])
            if np.isfinite(tau):
                taus[name].append(float(tau))
    return {name: float(np.mean(v)) if v else math.nan for name, v in taus.items()}


def monotone_ceiling(quality: np.ndarray, kbps: np.ndarray, chain: np.ndarray) -> float:
    """Best Spearman with ``quality`` of any ranking that orders the ``chain`` items by ``kbps``.

    Why: a metric trained on ViSQOL labels is also asked to order each codec's bitrates, and
    ViSQOL does not always do so; this is how much agreement with ViSQOL such a metric can keep.

    Exact: every placement of the chain's items among the ranks is enumerated (C(21, 7) =
    116,280 for one codec of one excerpt); the chain fills its ranks in bitrate order and the
    other items fill theirs in ``quality`` order, which the rearrangement inequality makes the
    best choice for a given placement.
    """
    from scipy.stats import rankdata

    quality, kbps = np.asarray(quality, dtype=float), np.asarray(kbps, dtype=float)
    chain = np.asarray(chain, dtype=bool)
    n, members = len(quality), np.flatnonzero(chain)
    if math.comb(n, len(members)) > 5_000_000:
        raise ValueError(f"{math.comb(n, len(members))} placements of {len(members)} of {n} items: "
                         "too many to enumerate")
    ranked = rankdata(quality)
    if len(members) == 0:
        return 1.0
    order = members[np.argsort(kbps[members], kind="stable")]
    others = np.flatnonzero(~chain)
    others = others[np.argsort(quality[others], kind="stable")]
    slots = np.array(list(combinations(range(n), len(order))))
    taken = np.zeros((len(slots), n), dtype=bool)
    np.put_along_axis(taken, slots, True, axis=1)
    other_slots = np.argsort(taken, axis=1, kind="stable")[:, : len(others)]
    best = int(np.argmax(slots @ ranked[order] + other_slots @ ranked[others]))
    ranks = np.empty(n)
    ranks[order], ranks[others] = slots[best], other_slots[best]
    return float(np.corrcoef(ranks, ranked)[0, 1])


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(1) / den


def bootstrap_ci(a: np.ndarray, b: np.ndarray, kind: str = "pearson", n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the PCC/SRCC over items (resampling pairs)."""
    from scipy.stats import rankdata

    n = len(a)
    if n < 3 or n_boot <= 0:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    ra, rb = np.asarray(a)[idx], np.asarray(b)[idx]
    if kind == "spearman":
        ra, rb = rankdata(ra, axis=1), rankdata(rb, axis=1)
    r = _rowwise_pearson(ra, rb)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(r, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def evaluate_metric(x: np.ndarray, y: np.ndarray, higher_is_better: bool = True, k: int = 5,
                    n_boot: int = 1000, seed: int = 0,
                    fitters: dict[str, Fitter] | None = None) -> dict[str, Any]:
    """All figures for one metric on one set of items (NaN scores/MOS dropped)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    x = x if higher_is_better else -x
    res: dict[str, Any] = {"n": len(x), "sign": "+" if higher_is_better else "-"}
    res["pcc_raw"], res["srcc_raw"] = pearson(x, y), spearman(x, y)
    res["pcc_raw_ci"] = bootstrap_ci(x, y, "pearson", n_boot, seed)
    res["srcc_raw_ci"] = bootstrap_ci(x, y, "spearman", n_boot, seed)
    fitters = fitters or {"cubic": fit_cubic, "mlp": lambda a, b: fit_mlp(a, b, seed)}
    for name, fitter in fitters.items():
        if len(x) < max(2 * k, 6):  # too few items for a cross-validated mapping
            for key in ("pcc", "srcc", "rmse"):
                res[f"{key}_{name}"] = math.nan
            res[f"pcc_{name}_ci"] = res[f"srcc_{name}_ci"] = (math.nan, math.nan)
            continue
        pred, _ = cv_predict(x, y, fitter, k, seed)
        res[f"pcc_{name}"], res[f"srcc_{name}"] = pearson(pred, y), spearman(pred, y)
        res[f"rmse_{name}"] = rmse(pred, y)
        res[f"pcc_{name}_ci"] = bootstrap_ci(pred, y, "pearson", n_boot, seed)
        res[f"srcc_{name}_ci"] = bootstrap_ci(pred, y, "spearman", n_boot, seed)
    return res


def evaluate(rows: Sequence[dict], scores: dict[str, np.ndarray], higher: dict[str, bool],
             k: int = 5, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Per test (``test`` column) and pooled: one result dict per (metric, test)."""
    mos = np.array([_float(r.get("mos")) for r in rows])
    tests = [str(r.get("test") or "") for r in rows]
    groups: list[tuple[str, np.ndarray]] = []
    names = sorted({t for t in tests if t})
    if len(names) > 1 or (names and "" in tests):
        groups += [(t, np.array([u == t for u in tests])) for t in names]
    groups.append((POOLED if len(groups) else (names[0] if names else POOLED),
                   np.ones(len(rows), bool)))
    out = []
    for metric, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        for test, mask in groups:
            res = evaluate_metric(values[mask], mos[mask], higher[metric], k, n_boot, seed)
            out.append({"metric": metric, "test": test, **res})
    return out


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# -- reporting --------------------------------------------------------------------------------------
def _fmt(v: float, ci: tuple[float, float] | None = None) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    if ci is None or not np.isfinite(ci[0]):
        return f"{v:.3f}"
    return f"{v:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def markdown_table(results: list[dict]) -> str:
    head = ["metric", "test", "n", "sign", "PCC raw", "SRCC raw", "PCC cubic", "SRCC cubic",
            "RMSE cubic", "PCC MLP", "SRCC MLP", "RMSE MLP"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        sign = "−x (distance)" if r["sign"] == "-" else "+x"
        cells = [r["metric"], r["test"], str(r["n"]), sign,
                 _fmt(r["pcc_raw"], r["pcc_raw_ci"]), _fmt(r["srcc_raw"], r["srcc_raw_ci"]),
                 _fmt(r.get("pcc_cubic"), r.get("pcc_cubic_ci")),
                 _fmt(r.get("srcc_cubic"), r.get("srcc_cubic_ci")), _fmt(r.get("rmse_cubic")),
                 _fmt(r.get("pcc_mlp"), r.get("pcc_mlp_ci")),
                 _fmt(r.get("srcc_mlp"), r.get("srcc_mlp_ci")), _fmt(r.get("rmse_mlp"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Correlations are in the quality-oriented direction: metrics marked −x (distances, "
                 "lower is better) are negated. Mapped figures (monotonic cubic, MLP) are "
                 "out-of-fold k-fold predictions; [95% bootstrap CI].")
    return "\n".join(lines)


def flat_rows(results: list[dict]) -> list[dict]:
    """Results with CI tuples split into _lo/_hi columns, for CSV."""
    out = []
    for r in results:
        row = {}
        for k, v in r.items():
            if isinstance(v, tuple):
                row[f"{k}_lo"], row[f"{k}_hi"] = v
            else:
                row[k] = v
        out.append(row)
    return out


def scatter_plots(rows: Sequence[dict], scores: dict[str, np.ndarray], higher: dict[str, bool],
                  out_dir: str | Path) -> list[Path]:
    """One PNG per metric per test: raw metric value vs MOS, with the cubic map (fit on all)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mos = np.array([_float(r.get("mos")) for r in rows])
    tests = np.array([str(r.get("test") or POOLED) for r in rows])
    conds = [str(r.get("condition") or "") for r in rows]
    paths = []
    for metric, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        groups = sorted(set(tests)) + ([POOLED] if len(set(tests)) > 1 else [])
        for test in groups:
            mask = np.isfinite(values) & np.isfinite(mos) & ((tests == test) | (test == POOLED))
            if mask.sum() < 2:
                continue
            fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
            cset = sorted(set(np.array(conds)[mask]))
            if 1 < len(cset) <= 12:
                for c in cset:
                    m = mask & (np.array(conds) == c)
                    ax.scatter(values[m], mos[m], s=14, label=c)
                ax.legend(fontsize=6, ncol=2)
            else:
                ax.scatter(values[mask], mos[mask], s=14)
            try:
                cubic = fit_cubic(values[mask], mos[mask])
                grid = np.linspace(values[mask].min(), values[mask].max(), 200)
                ax.plot(grid, cubic(grid), "k-", lw=1, label="monotonic cubic (all items)")
            except ValueError:
                pass
            arrow = "lower is better" if not higher[metric] else "higher is better"
            ax.set_xlabel(f"{metric} ({arrow})")
            ax.set_ylabel("MOS")
            ax.set_title(f"{metric} vs MOS — {test} (n={int(mask.sum())})", fontsize=9)
            fig.tight_layout()
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in f"{metric}_{test}")
            path = out_dir / f"scatter_{safe}.png"
            fig.savefig(path)
            plt.close(fig)
            paths.append(path)
    return paths
