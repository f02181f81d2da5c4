"""Do the distortion families' ladders hold on real music? Measured quantities per family.

For each of the 10 real recordings in ``../shared/data/visqol_conformance/audio`` (4 s from 1 s),
every family of ``configs/data_prep/families_grid.yaml`` is applied at its grid levels (the
separation families with the next recording as the interferer, every mask type), and the
quantity measured on the output (``snr_db``, ``cutoff_hz``, ``sdr_db``/``sir_db``/``sar_db``) is
checked against the level: how many recordings give a strictly ordered ladder, and the largest
gap between what was asked and what was measured where the level is that quantity. Recordings
without content near a cut-off (its measure is null) are left out of that family's count.

    python benchmarks/bench_families.py [--seconds 4]
"""

from __future__ import annotations

import argparse
import sys
from itertools import pairwise
from pathlib import Path

from shared_data import RECORDINGS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

AUDIO = RECORDINGS
SR = 48000
#: family -> the measured quantity that should follow its level (and whether it equals it)
CHECKS = {"noise_white": ("snr_db", True), "noise_pink": ("snr_db", True),
          "lowpass": ("cutoff_hz", True), "resample_bandlimit": ("cutoff_hz", False),
          "interference": ("sir_db", True), "artefacts": ("sdr_db", False),
          "interference+artefacts": ("sdr_db", False)}


def main(argv: list[str] | None = None) -> int:
    import soundfile as sf
    from tqdm import tqdm

    from data_prep.degradations import get_degradation, ladder
    from data_prep.families import load_families
    from data_prep.separation import MASK_TYPES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--families", nargs="+", default=list(CHECKS), choices=list(CHECKS))
    ap.add_argument("--no-limit", action="store_true",
                    help="do not clip to [-1, 1] (the corpus does: the FLAC range)")
    args = ap.parse_args(argv)
    files = sorted(p for p in AUDIO.glob("*48_stereo.wav"))
    clips = []
    for p in files:
        x, _ = sf.read(str(p), dtype="float32", always_2d=True, start=SR,
                        frames=int(args.seconds * SR))
        clips.append(x.T.copy())
    specs = load_families(REPO / "configs" / "data_prep" / "families_grid.yaml")
    rows = []
    for spec in tqdm([s for s in specs if s.name in args.families], desc="families", file=sys.stderr):
        deg = get_degradation(spec.name)
        key, equal = CHECKS[spec.name]
        for mask in (MASK_TYPES if deg.needs_others and spec.name != "interference" else [None]):
            ordered, gaps, unknown, secondary = 0, [], 0, {"sir_db": 0, "sar_db": 0}
            for i, x in enumerate(clips):
                opts = {"others": clips[(i + 1) % len(clips)]} if deg.needs_others else {}
                if mask:
                    opts["mask"] = mask
                got = [d.measures for d in ladder(spec.name, x, SR, list(spec.levels), seed=i,
                                                  limit=None if args.no_limit else 1.0, **opts)]
                v = [m[key] for m in got]
                if None in v:   # a cut-off above the recording's content: not measurable
                    unknown += 1
                    continue
                sign = 1 if deg.higher_is_better else -1
                ordered += all(sign * (b - a) > 0 for a, b in pairwise(v))
                if equal:
                    gaps += [abs(a - lv) / (lv if key == "cutoff_hz" else 1)
                             for a, lv in zip(v, spec.levels)]
                if mask:
                    for k in secondary:
                        w = [m[k] for m in got]
                        secondary[k] += all(b < a for a, b in pairwise(w))
            rows.append((spec.name + (f" ({mask})" if mask else ""), key, ordered,
                         len(clips) - unknown, max(gaps) if gaps else None,
                         secondary if mask else None))
    print("| family | measured | ladders ordered | max abs(measured - asked) | "
          "also ordered: SIR, SAR |")
    print("|---|---|---:|---:|---:|")
    for name, key, ok, n, gap, sec in rows:
        g = "-" if gap is None else (f"{100 * gap:.2f} %" if key == "cutoff_hz" else
                                     f"{gap:.3f} dB")
        s = "-" if sec is None else f"{sec['sir_db']}/{n}, {sec['sar_db']}/{n}"
        print(f"| {name} | {key} | {ok}/{n} | {g} | {s} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
