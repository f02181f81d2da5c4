"""Scoring throughput: DeePAQ vs ViSQOL side by side on the shared pairs, caching, batch sizes, 1 h file.

    .venv/bin/python benchmarks/bench_score.py [--checkpoint DIR] [--quick] [--device cpu]

Prints pairs/s for ViSQOL (visqol-python, audio mode) and the DeePAQ model on the 10 shared
reference/degraded pairs (``../shared/data/visqol_conformance/cases.json``) at batch sizes 1/8/32,
with and without reference-embedding caching on a shared-reference set (each reference with its
degraded file and 4 low-passed copies of it: 50 pairs), the DeePAQ/ViSQOL throughput ratio, this
process's peak RSS, and the time/peak RSS of scoring a 60-minute pair (music tiled to an hour,
scored in a subprocess so its peak memory is its own). Without ``--checkpoint`` it uses
``checkpoints/deepaq-small`` when present, else a random-init model of the default log-mel CNN
architecture (same cost as a trained one).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = REPO.parent / "shared" / "data" / "visqol_conformance" / "cases.json"


def peak_rss_mb() -> float:
    """Peak RSS of this process image (VmHWM; ru_maxrss would carry a parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def checkpoint_dir(arg: str | None, tmp: Path) -> tuple[Path, str]:
    from deepaq.scoring import default_checkpoint_path

    if arg:
        return Path(arg), arg
    default = default_checkpoint_path()
    if (default / "config.yaml").is_file():
        return default, str(default)
    import torch

    from deepaq.checkpoint import save_checkpoint
    from deepaq.model import QualityModel

    torch.manual_seed(0)
    # explicit sizes: the recorded config must rebuild this model even if defaults change
    model = QualityModel(backbone="logmel_cnn", embed_dim=256,
                         backbone_args={"n_mels": 128, "channels": [8, 16, 32, 64]})
    return save_checkpoint(model, tmp / "random_init"), "random-init logmel_cnn (no default yet)"


def make_shared_ref_set(pairs: list[tuple[str, str]], tmp: Path) -> list[tuple[str, str]]:
    """Each reference with its degraded file and 4 low-passed copies of it (5 per reference)."""
    import soundfile as sf
    from scipy.signal import butter, sosfilt

    out = []
    for ref, deg in pairs:
        out.append((ref, deg))
        x, sr = sf.read(deg, dtype="float32", always_2d=True)
        for cut in (4000, 8000, 12000, 16000):
            path = tmp / f"{Path(deg).stem}_lp{cut}.wav"
            sf.write(path, sosfilt(butter(6, cut, fs=sr, output="sos"), x, axis=0), sr)
            out.append((ref, str(path)))
    return out


def time_deepaq(ckpt: Path, pairs, batch_size: int, cache: bool, device: str) -> float:
    from deepaq.scoring import Scorer

    s = Scorer.from_pretrained(ckpt, device=device, batch_size=batch_size,
                               memory_cache_items=512 if cache else 0)
    s.score(pairs[0][0], pairs[0][1])  # warm-up (threads, allocator), not timed
    s._memory.clear()
    t = time.perf_counter()
    results = s.score_many(pairs)
    dt = time.perf_counter() - t
    bad = [r for r in results if isinstance(r, Exception)]
    if bad:
        raise RuntimeError(f"scoring failed: {bad[0]}")
    return len(pairs) / dt


def time_visqol(pairs) -> float:
    from deepaq.visqol import VisqolLabeller

    lab = VisqolLabeller(mode="audio")
    lab.warmup()
    t = time.perf_counter()
    for ref, deg in pairs:
        lab.score_files(ref, deg)
    return len(pairs) / (time.perf_counter() - t)


def write_long(src: str, path: Path, minutes: float) -> None:
    """Tile a music file to ``minutes`` (PCM 16 WAV), written block by block."""
    import soundfile as sf

    x, sr = sf.read(src, dtype="float32", always_2d=True)
    total = int(minutes * 60 * sr)
    with sf.SoundFile(str(path), "w", sr, x.shape[1], subtype="PCM_16") as f:
        written = 0
        while written < total:
            block = x[: total - written]
            f.write(block)
            written += block.shape[0]


LONG_CHILD = """
import json, sys, time
from pathlib import Path
from deepaq.scoring import Scorer
s = Scorer.from_pretrained(sys.argv[1], device=sys.argv[4], batch_size=16)
t = time.perf_counter()
r = s.score(sys.argv[2], sys.argv[3])
print(json.dumps({"seconds": time.perf_counter() - t, "distance": r.distance, "windows": r.windows,
                  "duration_s": r.duration_s,
                  "peak_rss_mb": [int(l.split()[1]) / 1024 for l in
                                  Path("/proc/self/status").read_text().splitlines()
                                  if l.startswith("VmHWM:")][0]}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--quick", action="store_true", help="batch size 8 only, 5-minute long file")
    p.add_argument("--device", default="cpu")
    p.add_argument("--long-minutes", type=float, default=None,
                   help="length of the long pair (default 60, 5 with --quick; 0 skips it)")
    p.add_argument("--long-only", action="store_true", help="only the long-file measurement")
    args = p.parse_args(argv)
    cases = json.loads(CASES.read_text())["cases"]
    base = CASES.parent
    pairs = [(str(base / c["reference"]), str(base / c["degraded"])) for c in cases][:10]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        ckpt, label = checkpoint_dir(args.checkpoint, tmp)
        print(f"checkpoint: {label}\ndevice: {args.device}\npairs: {len(pairs)} shared pairs "
              f"(7-16 s, 48 kHz stereo)\n")
        sizes = () if args.long_only else (8,) if args.quick else (1, 8, 32)
        if sizes:
            v = time_visqol(pairs)
            print(f"ViSQOL (visqol-python, audio mode): {v:.3f} pairs/s")
            shared = make_shared_ref_set(pairs, tmp)
            print("\n| batch | DeePAQ pairs/s (10 pairs) | ratio vs ViSQOL | shared-ref set "
                  "(50 pairs) no cache | with cache | cache speed-up |")
            print("|---|---|---|---|---|---|")
        for bs in sizes:
            d = time_deepaq(ckpt, pairs, bs, True, args.device)
            nc = time_deepaq(ckpt, shared, bs, False, args.device)
            wc = time_deepaq(ckpt, shared, bs, True, args.device)
            print(f"| {bs} | {d:.2f} | {d / v:.1f}x | {nc:.2f} | {wc:.2f} | {wc / nc:.2f}x |",
                  flush=True)
        print(f"\npeak RSS of this process so far: {peak_rss_mb():.0f} MB")
        minutes = args.long_minutes if args.long_minutes is not None else (
            5.0 if args.quick else 60.0)
        if minutes <= 0:
            return 0
        ref, deg = tmp / "long_ref.wav", tmp / "long_deg.wav"
        write_long(pairs[6][0], ref, minutes)
        write_long(pairs[6][1], deg, minutes)
        out = subprocess.run([sys.executable, "-c", LONG_CHILD, str(ckpt), str(ref), str(deg),
                              args.device], capture_output=True, text=True, cwd=REPO,
                             check=False)
        if out.returncode != 0:
            print(out.stderr[-2000:])
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{minutes:g}-minute pair (tiled {Path(pairs[6][0]).name}): {r['seconds']:.1f} s, "
              f"{r['windows']} windows, {minutes * 60 / r['seconds']:.0f}x real time, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB (one 48 kHz stereo float32 copy of the file "
              f"would be {minutes * 60 * 48000 * 2 * 4 / 2**20:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
