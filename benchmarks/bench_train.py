"""Training throughput and memory: tiny vs MERT-95M, conv encoder frozen or not, LoRA vs full.

Why: the paper recipe must fit a GPU and the data loader must not starve it (issue 3 asks for
loader samples/s >= 5x the training-step rate it feeds). Each configuration runs in its own
subprocess so peak memory (CPU: max RSS; GPU: torch.cuda.max_memory_allocated) is its own.

    .venv/bin/python benchmarks/bench_train.py            # full run (3 warm + 5 timed steps)
    .venv/bin/python benchmarks/bench_train.py --quick    # 1 warm + 1 timed step, fewer rows
    .venv/bin/python benchmarks/bench_train.py --device cuda --sizes mert95m

Batch: 4 clips x 5 s at 24 kHz (random-init weights; MERT-95M = the default HubertConfig).
The loader reads a corpus of real shared music (written to a temp folder as 48 kHz FLAC, 10 s
excerpts), decodes, resamples to 24 kHz, crops 5 s and collates, like ``deepaq fit``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared_data import RECORDINGS

REPO = Path(__file__).resolve().parents[1]
SHARED = RECORDINGS
BATCH, SECONDS, RATE = 4, 5.0, 24000


def _model_args(size: str, lora: bool, freeze_encoder: bool) -> dict:
    import yaml

    if size == "tiny":
        cfg = yaml.safe_load((REPO / "configs" / "train" / "tiny.yaml").read_text())
        args = dict(cfg["model"]["model"])
        args["backbone_args"] = {"config": dict(args["backbone_args"]["config"])}
    else:  # MERT-v1-95M shape, random init
        args = {"backbone": "mert", "backbone_args": {"config": {}}, "embed_dim": 256}
    args["lora"] = ({"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
                    if lora else None)
    args["freeze_feature_encoder"] = freeze_encoder
    return args


def _peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_train(size: str, lora: bool, freeze_encoder: bool, device: str, warm: int,
              steps: int, precision: str) -> dict:
    """One configuration: samples/s of forward + RnC loss + backward + AdamW step."""
    import torch

    from deepaq.losses import RnCLoss
    from deepaq.model import QualityModel

    torch.manual_seed(0)
    model = QualityModel(**_model_args(size, lora, freeze_encoder)).to(device).train()
    loss_fn = RnCLoss()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                            weight_decay=0.01)
    wave = torch.randn(BATCH, int(SECONDS * RATE), device=device) * 0.1
    lengths = torch.full((BATCH,), wave.shape[1], dtype=torch.long, device=device)  # as deepaq fit
    visqol = torch.tensor([4.7, 4.2, 3.1, 2.0], device=device)
    bitrate = torch.tensor([float("inf"), 96.0, 48.0, 16.0], device=device)
    excerpt = torch.zeros(BATCH, dtype=torch.long, device=device)
    autocast = (torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
                if precision == "bf16-mixed" else torch.autocast("cpu", enabled=False))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            emb = model(wave, lengths)
        loss = loss_fn(emb.float(), visqol, bitrate, groups=excerpt)
        loss.backward()
        opt.step()

    for _ in range(warm):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    trainable, total = model.parameter_counts()
    return {"samples_per_s": BATCH * steps / elapsed, "step_s": elapsed / steps,
            "peak_mb": _peak_memory_mb(device), "trainable": trainable, "total": total}


def make_corpus(folder: Path, excerpts: int = 12) -> Path:
    """10 s excerpts of the shared music + a copy as 'coded' item, in the manifest schema."""
    from deepaq.audio import load_audio, write_audio
    from deepaq.records import write_jsonl

    rows = []
    files = sorted(SHARED.glob("*48_stereo.wav"))
    for i in range(excerpts):
        src = files[i % len(files)]
        x = load_audio(src, start=0.0, end=10.0)
        ex = f"{src.stem}__{i}"
        for cond, y in (("clean", x), ("gain_096", 0.5 * x)):
            rel = f"audio/{ex}/{cond}.flac"
            write_audio(folder / rel, y, 48000)
            rows.append({"key": f"{ex}__{cond}", "excerpt_id": ex, "track_id": src.stem,
                         "split": "train", "condition": cond, "path": rel,
                         "reference": f"audio/{ex}/clean.flac", "visqol": 4.5,
                         "bitrate_label": float("inf") if cond == "clean" else 96.0,
                         "sample_rate": 48000, "num_samples": x.shape[1]})
    return write_jsonl(folder / "manifest.jsonl", rows)


def run_loader(num_workers: int, batches: int) -> dict:
    """Samples/s of the training data loader alone (decode + resample + crop + collate)."""
    from deepaq.training.data import CorpusDataModule

    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_corpus(Path(tmp))
        dm = CorpusDataModule(str(manifest), batch_size=BATCH, conditions_per_excerpt=2,
                              sample_rate=RATE, crop_seconds=SECONDS, num_workers=num_workers,
                              seed=0, val_split="train")
        dm.setup("fit")
        loader = dm.train_dataloader()
        it = iter(loader)
        next(it)  # worker start-up is not throughput
        n, t0 = 0, time.perf_counter()
        while n < batches:
            for batch in it:
                assert batch["item"].shape == (BATCH, int(SECONDS * RATE))
                n += 1
                if n >= batches:
                    break
            else:
                loader.batch_sampler.set_epoch(n)
                it = iter(loader)
        elapsed = time.perf_counter() - t0
    return {"samples_per_s": BATCH * n / elapsed, "workers": num_workers}


def _child(spec: dict) -> None:
    result = (run_loader(spec["workers"], spec["batches"]) if spec["kind"] == "loader"
              else run_train(spec["size"], spec["lora"], spec["freeze"], spec["device"],
                             spec["warm"], spec["steps"], spec["precision"]))
    print("RESULT " + json.dumps(result))


def _spawn(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                         check=False, capture_output=True, text=True, cwd=REPO)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"benchmark child failed: {spec}\n{out.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 warm + 1 timed step, fewer rows")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--workers", type=int, default=None,
                        help="loader workers (default: CPU count, at most 8)")
    parser.add_argument("--sizes", default="tiny,mert95m", help="comma list: tiny, mert95m")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(json.loads(args.child))
        return 0
    import torch
    from tqdm import tqdm

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = "bf16-mixed" if device.startswith("cuda") else "32-true"
    warm, steps = (1, 1) if args.quick else (3, 5)
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    variants = [(True, True), (True, False), (False, True), (False, False)]
    sizes = args.sizes.split(",")
    plan = [("tiny", lo, fr) for lo, fr in variants if "tiny" in sizes]
    if "mert95m" in sizes:  # quick: LoRA + frozen encoder (the recipe) and full fine-tuning only
        plan += [("mert95m", lo, fr) for lo, fr in (variants[::3] if args.quick else variants)]
    rows = []
    for size, lora, freeze in tqdm(plan, desc="bench_train", file=sys.stderr):
        spec = {"kind": "train", "size": size, "lora": lora, "freeze": freeze, "device": device,
                "warm": warm, "steps": steps, "precision": precision}
        rows.append({**spec, **_spawn(spec)})
    loader = _spawn({"kind": "loader", "workers": workers, "batches": 6 if args.quick else 30})

    print(f"\nTraining step, batch {BATCH} x {SECONDS:g} s at {RATE} Hz, device={device}, "
          f"precision={precision}, {warm} warm + {steps} timed steps")
    print(f"{'model':<8} {'adapt':<5} {'conv enc':<8} {'trainable':>12} {'samples/s':>10} "
          f"{'s/step':>8} {'peak MB':>9} {'loader/step':>12}")
    for r in rows:
        print(f"{r['size']:<8} {'LoRA' if r['lora'] else 'full':<5} "
              f"{'frozen' if r['freeze'] else 'trained':<8} "
              f"{100 * r['trainable'] / r['total']:>11.2f}% {r['samples_per_s']:>10.2f} "
              f"{r['step_s']:>8.3f} {r['peak_mb']:>9.0f} "
              f"{loader['samples_per_s'] / r['samples_per_s']:>11.1f}x")
    print(f"\nData loader alone ({loader['workers']} workers, 10 s 48 kHz FLAC -> 5 s 24 kHz "
          f"crops): {loader['samples_per_s']:.1f} samples/s")
    print("loader/step = loader samples/s over that row's training samples/s (want >= 5x). "
          "CPU peak MB is the process max RSS.")
    if not device.startswith("cuda"):
        print("Note: device=cpu, so loader/step compares with CPU training; the issue's criterion "
              "is the GPU step rate (run with --device cuda on a GPU machine).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
