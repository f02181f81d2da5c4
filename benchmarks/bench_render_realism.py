"""How ViSQOL orders Opus bitrates on rendered music, dry and with recorded acoustics, and on real
recordings.

Why: a metric learns ViSQOL's judgement from its training music. On the real recordings of
``../shared`` ViSQOL rates Opus at 16 kbps above 32 kbps; if dry renders do not show that, a model
trained on them cannot learn where that preference comes from (issue 7's Opus target). Here: the
first N clean excerpts of a rendered corpus's train split, each dry, in a room, over a noise floor,
and both (``data_prep.acoustics``, as ``deepaq-prep render --room-rt60 --noise-floor-db`` applies
them), coded with Opus at 16/32/48/64 kbps (the default grid's settings) and labelled with ViSQOL
v3; then the same for the 10 real recordings (first 10 s, as the held-out benchmark codes them).
Printed per row: mean Kendall tau of ViSQOL against bitrate, and how often 16 kbps scores above
32 kbps.

    .venv/bin/python benchmarks/bench_render_realism.py --manifest CORPUS/manifest.jsonl [-n 16]
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "visqol_conformance" / "audio"
RATES = (16, 32, 48, 64)


def opus_ladder(x: np.ndarray, specs: list, labeller) -> list[float]:
    """ViSQOL of ``x`` (C, N) coded with each Opus spec, lowest bitrate first."""
    from data_prep.codecs import code_excerpt

    return [labeller.score(x, code_excerpt(x, spec).audio) for spec in specs]


def summarise(ladders: list[list[float]]) -> str:
    from deepaq.evaluation import bitrate_kendall

    flat = np.concatenate(ladders)
    kbps = np.tile(RATES, len(ladders)).astype(float)
    group = np.repeat(np.arange(len(ladders)), len(RATES))
    tau = bitrate_kendall(flat, kbps, ["opus"] * flat.size, group)["opus"]
    above = sum(ladder[0] > ladder[1] for ladder in ladders)
    return f"{tau:.3f} | {above} of {len(ladders)}"


def main(argv: list[str] | None = None) -> None:
    from tqdm import tqdm

    from data_prep.acoustics import add_noise_floor, add_room
    from data_prep.codecs import load_grid
    from deepaq.audio import read_audio
    from deepaq.records import read_jsonl
    from deepaq.visqol import VisqolLabeller

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", type=Path, required=True, help="a corpus of dry renders")
    p.add_argument("-n", "--excerpts", type=int, default=16)
    p.add_argument("--room-rt60", type=float, default=1.2)
    p.add_argument("--room-wet", type=float, default=0.5)
    p.add_argument("--noise-floor-db", type=float, default=45.0)
    args = p.parse_args(argv)

    clean = [r for r in read_jsonl(args.manifest)
             if r["codec"] is None and r["split"] == "train"][:args.excerpts]
    specs = sorted((s for s in load_grid(REPO / "configs/data_prep/default_grid.yaml")
                    if s.codec == "opus" and s.bitrate_kbps in RATES), key=lambda s: s.bitrate_kbps)
    labeller = VisqolLabeller()

    def room(x, seed):
        return add_room(x, args.room_rt60, args.room_wet, seed=seed)

    def noise(x, seed):
        return add_noise_floor(x, args.noise_floor_db, seed=seed)

    variants = {"dry render": lambda x, s: x,
                f"room (RT60 {args.room_rt60:g} s, wet {args.room_wet:g})": room,
                f"noise floor ({args.noise_floor_db:g} dB below)": noise,
                "room + noise floor": lambda x, s: noise(room(x, s), s + 1)}
    print(f"{len(clean)} rendered excerpts of {args.manifest}; Opus at {RATES} kbps\n")
    print("| music | ViSQOL's Kendall tau vs Opus bitrate | 16 kbps above 32 kbps |")
    print("|---|---:|---:|")
    for name, transform in variants.items():
        ladders = []
        for r in tqdm(clean, desc=name, leave=False):
            x, _ = read_audio(args.manifest.parent / r["path"])
            y = transform(x, zlib.crc32(r["key"].encode()))
            y = y / max(1.0, float(np.abs(y).max()) / 0.99)
            ladders.append(opus_ladder(y.astype(np.float32), specs, labeller))
        print(f"| {name} | {summarise(ladders)} |", flush=True)
    if REAL.is_dir():
        ladders = []
        refs = sorted(f for f in REAL.glob("*48_stereo.wav"))
        for path in tqdm(refs, desc="real recordings", leave=False):
            x, _ = read_audio(path)
            ladders.append(opus_ladder(x[:, :10 * 48000], specs, labeller))
        print(f"| real recordings (../shared, {len(refs)}) | {summarise(ladders)} |")


if __name__ == "__main__":
    main()
