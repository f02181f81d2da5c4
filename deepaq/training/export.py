"""``deepaq export CHECKPOINT_DIR OUT_DIR``: fold LoRA into the backbone for deployment.

Why: a training checkpoint holds only what was trained (adapters + head) and needs the pretrained
backbone folder it was trained on. Merging the adapters (peft ``merge_and_unload``) gives plain
weights that run without peft's extra matmuls; the exported folder stores all of them, so
``deepaq.checkpoint.load_checkpoint`` loads it like any other checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def export_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path) -> Path:
    """Load, merge LoRA (if any), save with calibration and provenance; returns ``out_dir``."""
    import yaml

    from deepaq.checkpoint import load_checkpoint, save_checkpoint

    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    if out_dir.resolve() == checkpoint_dir.resolve():
        raise ValueError("OUT_DIR must differ from CHECKPOINT_DIR")
    model, calibration = load_checkpoint(checkpoint_dir)
    had_lora = model.config().get("lora") is not None
    model.merge_lora()
    metadata: dict = {}
    config_path = checkpoint_dir / "config.yaml"
    if config_path.is_file():
        metadata = dict((yaml.safe_load(config_path.read_text()) or {}).get("metadata") or {})
    metadata.update(exported_from=str(checkpoint_dir.resolve()), lora_merged=had_lora)
    out = Path(save_checkpoint(model, out_dir, calibration=calibration, metadata=metadata))
    train_config = checkpoint_dir / "train_config.yaml"
    if train_config.is_file():
        from deepaq.records import atomic_write_text

        atomic_write_text(out / "train_config.yaml", train_config.read_text())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deepaq export",
        description="Merge a checkpoint's LoRA adapters into its backbone and write a folder that "
                    "load_checkpoint / deepaq score can use.")
    parser.add_argument("checkpoint_dir", help="checkpoint folder written by 'deepaq fit'")
    parser.add_argument("out_dir", help="folder for the merged checkpoint")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        out = export_checkpoint(args.checkpoint_dir, args.out_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"deepaq export: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0
