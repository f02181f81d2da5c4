"""Every metric against listeners (bvrnn MUSHRA) and against known orders (a perceptual sanity suite).

Why: a learned metric exists to predict what people hear; this puts the default model, any candidate
checkpoint and every registered baseline side by side in one table:

- ``bvrnn``: the real MUSHRA test in ``../shared/data/listening_tests/bvrnn`` (112 stimuli, 24 kHz
  speech, 7 codec conditions x 16 pages; **validation only, never training**). Per stimulus Spearman
  and Pearson between the metric's quality-oriented headline value (its score, negated when lower
  is better; no fitted mapping) and the listeners' mean ``mos``; ``page rho``: mean over the 16 pages
  of the within-page Spearman (7 conditions each: does the metric order the conditions of one
  utterance). Our ``lsd``/``snr``/``si_sdr`` are checked against the provided ``baselines.csv``.
- ``sanity``: the 10 real recordings in ``../shared/data/visqol_conformance/audio`` (the first 10 s,
  castanets: its 7.3 s; stereo, 48 kHz). Per family, the Kendall tau between quality and the family's level
  (oriented so that +1 is the right order), mean over recordings: the codecs of
  ``configs/data_prep/default_grid.yaml`` by bitrate, and every family registered in
  ``data_prep.degradations`` with its ladder from ``configs/data_prep/families_grid.yaml`` (a
  registered family without a ladder there is listed as skipped; separation families take the next
  recording as the interferer). Invariances (gain within +-10 dB, polarity, resampling round trip,
  delay): the change from the metric's value for the identical pair, worst over recordings and
  levels. For metrics with a calibrated MOS (``deepaq`` rows, ``zimtohrli``'s own mapping) it is the
  MOS change; for the others it is ``4 * |dq| / range`` with ``range`` the spread of the metric's
  values over that recording's identical pair and family items (a 1..5 MOS-like scale; 0.1 is the
  issue's target for the calibrated MOS).
- ``pairs/s``: scored pairs per second of the metric's own time (sanity pairs: 10 s stereo at
  48 kHz; bvrnn pairs when only that suite ran), from one run on a shared, loaded machine: compare
  rows, not absolute values.

Every per-item metric output is cached on disk (``--cache-dir``; one JSONL per metric, keyed by
the item), so a rerun with a new ``--checkpoint`` only scores the new rows. Usage::

    python benchmarks/bench_listeners.py [--metrics all|a,b,...] [--checkpoint DIR ...]
        [--suites bvrnn,sanity] [--quick] [--out DIR] [--cache-dir DIR] [--cached-only]

A metric that cannot load (missing extra) is skipped with its one-line reason.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from shared_data import BVRNN, RECORDINGS

REPO = Path(__file__).resolve().parents[1]
CODEC_GRID = REPO / "configs" / "data_prep" / "default_grid.yaml"
FAMILY_GRID = REPO / "configs" / "data_prep" / "families_grid.yaml"
DEFAULT_CACHE = REPO / "runs" / "bench_listeners_cache"
SR = 48000
# the bench compares float arrays (nothing is stored to a fixed-point file), so gains above 0 dB
# need no headroom: the invariance ladder covers +-10 dB
LADDER_OVERRIDES = {"gain": (-10.0, -6.0, -3.0, 3.0, 6.0, 10.0)}
SUITE_VERSION = 1  # bump when the sanity items change (invalidates their cache keys)


# -- metrics -------------------------------------------------------------------------------------

def checkpoint_tag(path: str) -> str:
    """A cache name for a checkpoint: its folder name and a digest of its files' bytes and of the
    deepaq code that scores with it (a change of the scorer, e.g. its alignment, must not reuse
    rows scored before it)."""
    p = Path(path)
    files = sorted(f for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file())
    code = Path(__file__).resolve().parents[1] / "deepaq"
    files += sorted(code.rglob("*.py"))
    h = hashlib.blake2b(digest_size=6)
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return f"deepaq-{p.name}-{h.hexdigest()}"


class Row:
    """One table row: a metric spec, its cache file and (lazily) the loaded metric."""

    def __init__(self, spec: str, cache_dir: Path):
        self.spec = spec
        if spec.startswith("deepaq:"):
            self.tag = checkpoint_tag(spec.split(":", 1)[1])
        elif spec == "deepaq":  # the shipped checkpoint: a new default gets its own cache
            from deepaq.scoring import default_checkpoint_path

            self.tag = checkpoint_tag(str(default_checkpoint_path()))
        else:
            self.tag = spec.replace(":", "-")
        self.cache_path = cache_dir / f"{self.tag}.jsonl"
        self.cache: dict[str, dict] = {}
        if self.cache_path.exists():
            from deepaq.records import iter_jsonl

            raw = self.cache_path.read_bytes()
            if raw and not raw.endswith(b"\n"):  # a killed run's torn last line: cut it
                with open(self.cache_path, "r+b") as f:
                    f.truncate(raw.rfind(b"\n") + 1)
            for r in iter_jsonl(self.cache_path):
                self.cache[r["key"]] = r
        self.metric: Any = None
        self.error: str | None = None
        self.higher_is_better: bool | None = self.cache.get("__info__", {}).get("higher_is_better")

    def load(self) -> bool:
        if self.metric is not None or self.error is not None:
            return self.metric is not None
        from deepaq.metrics import get_metric

        try:
            self.metric = get_metric(self.spec)
        except Exception as exc:  # noqa: BLE001 - a metric that cannot load is a skipped row
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return False
        self.higher_is_better = bool(self.metric.info.higher_is_better)
        if "__info__" not in self.cache:
            self._append({"key": "__info__", "higher_is_better": self.higher_is_better})
        return True

    def _append(self, row: dict) -> None:
        from deepaq.records import dumps

        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.cache_path, "a", encoding="utf-8") as f:
            f.write(dumps(row) + "\n")
        self.cache[row["key"]] = row

    def score(self, key: str, ref: np.ndarray, deg: np.ndarray, sr: int) -> None:
        from deepaq.metrics import main_value

        t = time.perf_counter()
        try:
            out = self.metric.score(ref, deg, sr)
            row = {"key": key, "score": main_value(out),
                   "mos": out.get("mos") if isinstance(out, dict) else None}
        except Exception as exc:  # noqa: BLE001 - recorded per item, the run goes on
            row = {"key": key, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        row["seconds"] = time.perf_counter() - t
        self._append(row)

    def quality(self, key: str) -> float:
        """Quality-oriented headline value (NaN if missing or failed)."""
        r = self.cache.get(key)
        if r is None or r.get("score") is None or self.higher_is_better is None:
            return math.nan
        return float(r["score"]) if self.higher_is_better else -float(r["score"])

    def mos(self, key: str) -> float:
        r = self.cache.get(key) or {}
        return math.nan if r.get("mos") is None else float(r["mos"])


def resolve_metrics(spec: str, checkpoints: list[str]) -> list[str]:
    from deepaq.metrics import available_metrics

    names = available_metrics() if spec == "all" else [s.strip() for s in spec.split(",") if s]
    unknown = [n for n in names if n.split(":", 1)[0] not in available_metrics()]
    if unknown:
        raise ValueError(f"unknown {', '.join(unknown)}; available: {', '.join(available_metrics())}")
    if spec == "all":  # the shipped model first
        names = ["deepaq", *(n for n in names if n != "deepaq")]
    return names + [f"deepaq:{c}" for c in checkpoints]


# -- bvrnn ---------------------------------------------------------------------------------------

def bvrnn_items(root: Path, quick: bool) -> list[dict]:
    from deepaq.records import read_table

    rows = read_table(root / "stimuli.csv")
    if quick:
        pages = sorted({r["page"] for r in rows})[:4]
        rows = [r for r in rows if r["page"] in pages]
    return rows


def run_bvrnn(rows: list[Row], root: Path, quick: bool, cached_only: bool) -> list[dict]:
    from tqdm import tqdm

    from deepaq.audio import read_audio

    items = bvrnn_items(root, quick)
    todo = [r for r in rows if any(f"bvrnn/{i['key']}" not in r.cache for i in items)]
    if cached_only:
        todo = []
    loaded = [r for r in todo if r.load()]
    refs: dict[str, np.ndarray] = {}
    # item-major, so each metric sees one page's reference several times in a row (cdpam caches it)
    for item in tqdm(items, desc="bvrnn", disable=not loaded):
        key = f"bvrnn/{item['key']}"
        need = [r for r in loaded if key not in r.cache]
        if not need:
            continue
        if item["reference"] not in refs:
            refs[item["reference"]], sr = read_audio(root / item["reference"])
        deg, sr = read_audio(root / item["degraded"])
        for r in need:
            r.score(key, refs[item["reference"]], deg, sr)
    return items


def bvrnn_stats(row: Row, items: list[dict]) -> dict:
    from scipy.stats import spearmanr

    from deepaq.evaluation import pearson, spearman

    q = np.array([row.quality(f"bvrnn/{i['key']}") for i in items])
    # a row may cover part of the stimuli (an interrupted slow metric): stats over those, with n
    items = [i for i, v in zip(items, q) if math.isfinite(v)]
    q = q[np.isfinite(q)]
    mos = np.array([float(i["mos"]) for i in items])
    if len(items) < 3:
        return {"bvrnn_n": len(items)}
    pages: dict[str, list[int]] = {}
    for k, i in enumerate(items):
        pages.setdefault(i["page"], []).append(k)
    within = [spearmanr(q[ix], mos[ix])[0] for ix in pages.values()]
    within = [w for ix, w in zip(pages.values(), within) if len(ix) >= 3]
    return {"bvrnn_n": len(items), "bvrnn_spearman": spearman(q, mos),
            "bvrnn_pearson": pearson(q, mos),
            "bvrnn_page_spearman": float(np.nanmean(within)) if within else math.nan}


def baselines_check(rows: list[Row], items: list[dict], root: Path) -> list[dict]:
    """Our lsd/snr/si_sdr against the dataset's baselines.csv (same stimuli)."""
    from deepaq.evaluation import spearman
    from deepaq.records import read_table

    base = {r["key"]: r for r in read_table(root / "baselines.csv")}
    out = []
    for spec, column in (("lsd", "lsd_db"), ("snr", "snr_db"), ("si_sdr", "si_sdr_db")):
        row = next((r for r in rows if r.spec == spec), None)
        if row is None:
            continue
        ours = np.array([(row.cache.get(f"bvrnn/{i['key']}") or {}).get("score", math.nan)
                         for i in items], dtype=float)
        theirs = np.array([float(base[i["key"]][column]) for i in items])
        if not np.all(np.isfinite(ours)):
            continue
        out.append({"metric": spec, "column": column,
                    "max_abs_diff": float(np.max(np.abs(ours - theirs))),
                    "median_abs_diff": float(np.median(np.abs(ours - theirs))),
                    "spearman": spearman(ours, theirs)})
    return out


# -- sanity suite --------------------------------------------------------------------------------

def sanity_families(quick: bool) -> tuple[list[dict], list[str]]:
    """Families to run: dicts with name, kind, levels, higher_is_better, masks (+ codec spec);
    and the registered names that have no ladder (skipped)."""
    import yaml

    from data_prep import separation  # noqa: F401 - registers the separation families
    from data_prep.codecs import load_grid
    from data_prep.degradations import available, get_degradation

    families: list[dict] = []
    by_codec: dict[str, list] = {}
    for spec in load_grid(CODEC_GRID):
        by_codec.setdefault(spec.codec, []).append(spec)
    for codec, specs in by_codec.items():
        specs = sorted(specs, key=lambda s: s.bitrate_kbps)
        if quick:
            specs = [specs[0], specs[len(specs) // 2], specs[-1]]
        families.append({"name": codec, "kind": "codec", "levels": [s.bitrate_kbps for s in specs],
                         "specs": specs, "higher_is_better": True, "masks": ()})
    section = (yaml.safe_load(FAMILY_GRID.read_text()) or {}).get("degradations") or {}
    skipped = []
    for name in available():
        deg = get_degradation(name)
        entry = section.get(name)
        if entry is None and name not in LADDER_OVERRIDES:
            skipped.append(name)
            continue
        levels = list(LADDER_OVERRIDES.get(name, (entry or {}).get("levels", ())))
        if quick and len(levels) > 3 and not deg.is_invariance:
            levels = [levels[0], levels[len(levels) // 2], levels[-1]]
        families.append({"name": name, "kind": deg.kind, "levels": [float(v) for v in levels],
                         "higher_is_better": deg.higher_is_better,
                         "masks": tuple((entry or {}).get("masks", ()) or ())})
    return families, skipped


def recordings() -> list[Path]:
    """All recordings, sorted; the interferer of recording i is recording i + 1 (wrapping)."""
    return sorted(RECORDINGS.glob("*48_stereo.wav"))


def item_key(rec: str, family: str, level: float, seconds: float, mask: str | None = None) -> str:
    tail = f"/{mask}" if mask else ""
    return f"sanity{SUITE_VERSION}/{seconds:g}s/{rec}/{family}/{level:g}{tail}"


def make_item(fam: dict, level: float, k: int, clean: np.ndarray, other: np.ndarray, rec: str
              ) -> np.ndarray:
    from data_prep.codecs import code_excerpt
    from data_prep.degradations import get_degradation

    if fam["kind"] == "codec":
        return code_excerpt(clean, fam["specs"][k]).audio
    deg = get_degradation(fam["name"])
    rng = np.random.default_rng([zlib.crc32(rec.encode()), zlib.crc32(fam["name"].encode()), k])
    kwargs: dict = {}
    if deg.needs_others:
        kwargs["others"] = [other]
        if fam["masks"]:
            kwargs["mask"] = fam["masks"][zlib.crc32(rec.encode()) % len(fam["masks"])]
    return deg.apply(clean, SR, level, rng, **kwargs).audio


def sanity_plan(quick: bool, seconds: float) -> tuple[list[dict], list[dict], list[str], list[Path]]:
    """(families, items, skipped, recordings); an item: key, recording index, family index, level index."""
    families, skipped = sanity_families(quick)
    recs = recordings()
    items = []
    for ri, path in enumerate(recs):
        rec = path.name.replace("48_stereo.wav", "")
        items.append({"key": item_key(rec, "identical", 0, seconds), "rec": ri, "name": rec,
                      "family": None, "level": None})
        for fi, fam in enumerate(families):
            mask = None
            if fam["masks"]:
                mask = fam["masks"][zlib.crc32(rec.encode()) % len(fam["masks"])]
            for k, level in enumerate(fam["levels"]):
                items.append({"key": item_key(rec, fam["name"], level, seconds, mask), "rec": ri,
                              "name": rec, "family": fi, "level_index": k, "level": level})
    return families, items, skipped, recs


def load_excerpt(path: Path, seconds: float, offset: float = 0.0) -> np.ndarray:
    from deepaq.audio import load_audio

    x = load_audio(path, sample_rate=SR, channels="keep")
    a = int(offset * SR)
    return np.ascontiguousarray(x[:, a:a + int(seconds * SR)])


def run_sanity(rows: list[Row], quick: bool, seconds: float, cached_only: bool,
               max_recordings: int | None = None) -> dict:
    from tqdm import tqdm

    from deepaq.alignment import fit_length

    families, items, skipped, recs = sanity_plan(quick, seconds)
    if quick and max_recordings is None:
        max_recordings = 3
    scored = [i for i in items if max_recordings is None or i["rec"] < max_recordings]
    todo = [] if cached_only else [r for r in rows if any(i["key"] not in r.cache for i in scored)]
    loaded = [r for r in todo if r.load()]
    by_rec: dict[int, list[dict]] = {}
    for i in scored:
        by_rec.setdefault(i["rec"], []).append(i)
    bar = tqdm(total=sum(1 for i in scored for r in loaded if i["key"] not in r.cache),
               desc="sanity", disable=not loaded)
    for ri, rec_items in by_rec.items():
        if not any(i["key"] not in r.cache for i in rec_items for r in loaded):
            continue
        clean = load_excerpt(recs[ri], seconds)
        other = load_excerpt(recs[(ri + 1) % len(recs)], seconds)
        other = fit_length(other, clean.shape[1])
        for item in rec_items:
            need = [r for r in loaded if item["key"] not in r.cache]
            if not need:
                continue
            if item["family"] is None:
                deg = clean
            else:
                fam = families[item["family"]]
                try:
                    deg = make_item(fam, item["level"], item["level_index"], clean, other,
                                    item["name"])
                except Exception as exc:  # noqa: BLE001 - a failed item is recorded, run goes on
                    for r in need:
                        r._append({"key": item["key"], "error": f"making the item: {exc}"})
                    bar.update(len(need))
                    continue
            for r in need:
                r.score(item["key"], clean, deg, SR)
                bar.update(1)
    bar.close()
    return {"families": families, "items": items, "skipped": skipped}


def sanity_stats(row: Row, plan: dict) -> dict:
    from scipy.stats import kendalltau

    families, items = plan["families"], plan["items"]
    out: dict[str, Any] = {}
    use_mos = any(not math.isnan(row.mos(i["key"])) for i in items)
    by_rec: dict[int, list[dict]] = {}
    for i in items:
        by_rec.setdefault(i["rec"], []).append(i)
    # a recording counts when the row scored every item of it (a run may cover fewer recordings)
    by_rec = {k: v for k, v in by_rec.items()
              if all(math.isfinite(row.quality(i["key"])) for i in v)}
    out["sanity_recordings"] = len(by_rec)
    if not by_rec:
        return out
    worst_inv: dict[str, float] = {}
    for fi, fam in enumerate(families):
        taus = []
        for rec_items in by_rec.values():
            ladder = [i for i in rec_items if i["family"] == fi]
            q = np.array([row.quality(i["key"]) for i in ladder])
            if not np.all(np.isfinite(q)):
                taus = None
                break
            if fam["kind"] == "invariance":
                ident = rec_items[0]
                fam_items = [i for i in rec_items if i["family"] is not None
                             and families[i["family"]]["kind"] != "invariance"]
                if use_mos:
                    delta = np.abs(np.array([row.mos(i["key"]) for i in ladder])
                                   - row.mos(ident["key"]))
                else:
                    spread = [row.quality(i["key"]) for i in [ident, *fam_items]]
                    rng = np.nanmax(spread) - np.nanmin(spread)
                    delta = 4.0 * np.abs(q - row.quality(ident["key"])) / max(rng, 1e-12)
                worst_inv[fam["name"]] = max(worst_inv.get(fam["name"], 0.0), float(delta.max()))
                continue
            level = np.array([i["level"] for i in ladder], dtype=float)
            oriented = level if fam["higher_is_better"] else -level
            t = kendalltau(q, oriented)[0] if len(q) > 1 else math.nan
            taus.append(t)
        if fam["kind"] != "invariance":
            out[f"tau_{fam['name']}"] = (float(np.nanmean(taus)) if taus else math.nan)
    if worst_inv:
        name = max(worst_inv, key=worst_inv.get)
        out["worst_invariance"] = (f"{worst_inv[name]:.2f} ({name})" if worst_inv[name] >= 0.005
                                   else f"{worst_inv[name]:.2f}")
        out["worst_invariance_value"] = worst_inv[name]
        out["worst_invariance_family"] = name
        out.update({f"inv_{k}": v for k, v in worst_inv.items()})
    out["invariance_scale"] = "mos" if use_mos else "4*dq/range"
    return out


# -- output --------------------------------------------------------------------------------------

def pairs_per_second(row: Row, keys: list[str]) -> float:
    secs = [row.cache[k]["seconds"] for k in keys if k in row.cache and "score" in row.cache[k]]
    return len(secs) / sum(secs) if secs and sum(secs) > 0 else math.nan


def fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


SHORT = {"bvrnn_n": "bvrnn n", "bvrnn_spearman": "bvrnn ρ", "bvrnn_pearson": "bvrnn r",
         "bvrnn_page_spearman": "page ρ", "worst_invariance": "worst inv", "sanity_recordings": "recs"}


def markdown(results: list[dict], columns: list[str]) -> str:
    head = ["metric", *(SHORT.get(c, c.replace("tau_", "τ ").replace("inv_", "Δ "))
                        for c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * len(columns) + "|"]
    for r in results:
        cells = [r["metric"]] + [fmt(r.get(c), 1 if c.endswith("pairs/s") and (r.get(c) or 0) >= 10
                                     else 2) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--metrics", default="all", help="'all' or a comma list of registry names")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                    help="one more deepaq checkpoint row (repeatable)")
    ap.add_argument("--suites", default="bvrnn,sanity", help="comma list of bvrnn, sanity")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 4 bvrnn pages, 3 recordings of 3 s, 3 levels per family")
    ap.add_argument("--seconds", type=float, default=None, help="sanity excerpt length (10; quick 3)")
    ap.add_argument("--recordings", type=int, default=None, metavar="N",
                    help="score only the first N sanity recordings this run (slow metrics); the "
                         "table uses the recordings a row has complete (column sanity_recordings)")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--cached-only", action="store_true",
                    help="score nothing; report what the cache holds (incomplete cells: —)")
    ap.add_argument("--out", type=Path, default=None, help="write results.json and results.csv here")
    ap.add_argument("--bvrnn", type=Path, default=BVRNN, help="the bvrnn folder")
    args = ap.parse_args(argv)
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    bad = [s for s in suites if s not in ("bvrnn", "sanity")]
    if bad:
        print(f"bench_listeners: --suites: unknown {bad}; choose from bvrnn, sanity", file=sys.stderr)
        return 2
    for c in args.checkpoint:
        if not Path(c).exists():
            print(f"bench_listeners: --checkpoint {c}: not found", file=sys.stderr)
            return 2
    if "bvrnn" in suites and not (args.bvrnn / "stimuli.csv").is_file():
        print(f"bench_listeners: --bvrnn {args.bvrnn}: no stimuli.csv", file=sys.stderr)
        return 2
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    try:
        specs = resolve_metrics(args.metrics, args.checkpoint)
    except ValueError as exc:
        print(f"bench_listeners: --metrics: {exc}", file=sys.stderr)
        return 2
    rows = [Row(s, args.cache_dir) for s in specs]

    summary: dict[str, Any] = {"command": " ".join(sys.argv), "suites": suites,
                               "quick": args.quick, "seconds": seconds}
    bv_items = run_bvrnn(rows, args.bvrnn, args.quick, args.cached_only) if "bvrnn" in suites else []
    plan = (run_sanity(rows, args.quick, seconds, args.cached_only, args.recordings)
            if "sanity" in suites else None)

    results, columns = [], []
    if bv_items:
        columns += ["bvrnn_n", "bvrnn_spearman", "bvrnn_pearson", "bvrnn_page_spearman"]
    if plan:
        columns += [f"tau_{f['name']}" for f in plan["families"] if f["kind"] != "invariance"]
        columns += [f"inv_{f['name']}" for f in plan["families"] if f["kind"] == "invariance"]
        columns += ["worst_invariance", "sanity_recordings"]
        summary["skipped_families"] = plan["skipped"]
        summary["families"] = [{k: v for k, v in f.items() if k != "specs"} for f in plan["families"]]
    columns += (["bvrnn pairs/s"] if bv_items else []) + (["pairs/s"] if plan else [])
    for r in rows:
        res: dict[str, Any] = {"metric": r.spec, "cache": str(r.cache_path)}
        if r.error:
            res["skipped"] = r.error
        if bv_items:
            res.update(bvrnn_stats(r, bv_items))
        if plan:
            res.update(sanity_stats(r, plan))
        if bv_items:
            res["bvrnn pairs/s"] = pairs_per_second(r, [f"bvrnn/{i['key']}" for i in bv_items])
        if plan:
            res["pairs/s"] = pairs_per_second(r, [i["key"] for i in plan["items"]])
        errors = [v["error"] for v in r.cache.values() if "error" in v]
        if errors:
            res["errors"] = len(errors)
            res["first_error"] = errors[0]
        results.append(res)
    shown = [res for res, r in zip(results, rows) if len(r.cache) > 1]  # rows with items
    print(markdown(shown, columns))
    for r in results:
        if r.get("skipped"):
            print(f"skipped {r['metric']}: {r['skipped']}")
        if r.get("errors"):
            print(f"{r['metric']}: {r['errors']} failed items, first: {r['first_error']}")
    if plan and plan["skipped"]:
        print(f"registered families without a ladder (not run): {', '.join(plan['skipped'])}")
    if bv_items:
        summary["baselines_check"] = baselines_check(rows, bv_items, args.bvrnn)
        for c in summary["baselines_check"]:
            print(f"check {c['metric']} vs baselines.csv {c['column']}: max |diff| "
                  f"{c['max_abs_diff']:.3g}, median {c['median_abs_diff']:.3g}, "
                  f"Spearman {c['spearman']:.4f}")
    if args.out:
        from deepaq.records import atomic_write_text, write_csv

        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "results.json",
                          json.dumps({**summary, "columns": columns, "results": results},
                                     indent=2, default=str))
        write_csv(args.out / "results.csv", [{"key": r["metric"], **r} for r in results])
    return 0


if __name__ == "__main__":
    sys.exit(main())
