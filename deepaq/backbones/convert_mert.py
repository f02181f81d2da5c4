"""``deepaq convert-mert SRC DST``: a MERT hub snapshot -> a plain local HubertModel folder.

MERT's hub repo ships remote code that no longer runs on transformers 5, but MERT-v1-95M is a
HubertModel key for key. This turns a snapshot folder (``config.json`` with ``model_type:
mert_model`` plus ``model.safetensors`` or ``pytorch_model.bin``) or a bare ``pytorch_model.bin``
into DST/{config.json (HubertConfig), model.safetensors, preprocessor_config.json, sha256.txt,
conversion.json}, which ``build_mert(pretrained=DST)`` loads with ``local_files_only=True``.

Safety and strictness: weights are read with safetensors or ``torch.load(weights_only=True)``
(never arbitrary unpickling, never remote code); MERT options a HubertModel cannot express (CQT
front end, DeepNorm, attention relaxation) must be off; the state dict must load strictly after
the known renames (old weight-norm ``weight_g``/``weight_v`` -> parametrizations) and known
MERT-only pretraining keys are dropped — any other unexpected or missing key fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

#: pretraining-only tensors that a MERT/HuBERT checkpoint may carry and a HubertModel has not
DROP_PREFIXES = ("label_embs_concat", "final_proj.", "final_cqt_proj.", "label_embs.")
#: prefixes that wrap the whole model in some exports
STRIP_PREFIXES = ("hubert.", "model.", "mert.")
#: old torch.nn.utils.weight_norm names -> torch.nn.utils.parametrizations.weight_norm names
RENAMES = {
    "encoder.pos_conv_embed.conv.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv_embed.conv.weight_v": "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
}
#: MERT config options that change the network beyond HubertModel: key -> test that it is off
MERT_OFF = {
    "feature_extractor_cqt": lambda v: not v,
    "deepnorm": lambda v: not v,
    "attention_relax": lambda v: v is None or float(v) <= 0,
}
#: config keys that describe the file, not the network
META_KEYS = {"architectures", "auto_map", "model_type", "_name_or_path", "transformers_version",
             "torch_dtype", "dtype"}
HUB_PATTERNS = ["config.json", "preprocessor_config.json", "model.safetensors", "pytorch_model.bin"]


class ConversionError(ValueError):
    """The source is not a MERT checkpoint that converts exactly into a HubertModel."""


def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def mert_to_hubert_config(mert: dict) -> tuple[dict, list[str]]:
    """(HubertConfig kwargs, ignored keys) from a MERT config.json; refuses CQT/DeepNorm/relax."""
    from transformers import HubertConfig

    model_type = mert.get("model_type")
    if model_type not in (None, "mert_model", "hubert"):
        raise ConversionError(f"config.json model_type is {model_type!r}, expected 'mert_model'")
    for key, is_off in MERT_OFF.items():
        if key in mert and not is_off(mert[key]):
            raise ConversionError(f"MERT option {key}={mert[key]!r} is on: a HubertModel cannot "
                                  "reproduce it, refusing to convert")
    known = set(HubertConfig().to_dict())
    kwargs = {k: v for k, v in mert.items() if k in known and k not in META_KEYS}
    ignored = sorted(k for k in mert if k not in known and k not in META_KEYS and k not in MERT_OFF)
    return kwargs, ignored


def load_state_dict(path: Path) -> dict:
    """Tensors of a .safetensors or .bin file, without executing pickled code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError and others
        raise ConversionError(f"{path}: cannot read as a weights-only checkpoint ({exc})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and set(state) == {wrapper} and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: not a state dict")
    return state


def map_keys(state: dict) -> tuple[dict, list[str], list[str]]:
    """(HubertModel state dict, dropped keys, renamed keys) from a MERT state dict."""
    out, dropped, renamed = {}, [], []
    for key, tensor in state.items():
        name = key
        for prefix in STRIP_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        if name.startswith(DROP_PREFIXES):
            dropped.append(key)
            continue
        if name in RENAMES:
            renamed.append(f"{name} -> {RENAMES[name]}")
            name = RENAMES[name]
        if name in out:
            raise ConversionError(f"two source keys map to {name!r}")
        out[name] = tensor
    return out, dropped, renamed


def _find_weights(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise ConversionError(f"{folder}: no model.safetensors or pytorch_model.bin")


def _resolve_source(src: str, allow_download: bool) -> tuple[Path, Path | None]:
    """(weights file, folder holding config.json or None)."""
    path = Path(src).expanduser()
    if path.is_dir():
        return _find_weights(path), path if (path / "config.json").is_file() else None
    if path.is_file():
        folder = path.parent if (path.parent / "config.json").is_file() else None
        return path, folder
    if not allow_download:
        raise ConversionError(f"{src}: no such file or folder (to fetch a hub id such as "
                              "m-a-p/MERT-v1-95M pass --allow-download)")
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(src, allow_patterns=HUB_PATTERNS))
    return _find_weights(folder), folder


def convert(src: str | os.PathLike, dst: str | os.PathLike, config_path: str | None = None,
            allow_download: bool = False, force: bool = False) -> Path:
    """Convert ``src`` into the folder ``dst`` (written atomically) and return ``dst``."""
    import torch
    from transformers import HubertConfig, HubertModel

    from deepaq.backbones import file_sha256
    from deepaq.backbones.mert import MERT_PREPROCESSOR

    dst = Path(dst).expanduser()
    if dst.exists() and not force:
        raise ConversionError(f"{dst} exists (use --force to replace it)")
    weights, folder = _resolve_source(str(src), allow_download)
    if config_path is not None:
        mert_config = _read_json(Path(config_path))
    elif folder is not None:
        mert_config = _read_json(folder / "config.json")
    else:  # a bare pytorch_model.bin: MERT-v1-95M is the default HubertConfig
        mert_config = {}
    kwargs, ignored = mert_to_hubert_config(mert_config)
    preprocessor = dict(MERT_PREPROCESSOR)
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        preprocessor.update(_read_json(folder / "preprocessor_config.json"))
    if "sample_rate" in mert_config:
        preprocessor["sampling_rate"] = int(mert_config["sample_rate"])

    state, dropped, renamed = map_keys(load_state_dict(weights))
    config = HubertConfig(**kwargs)
    model = HubertModel(config)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(f"{weights}: does not match a HubertModel with this config: missing "
                              f"{result.missing_keys}, unexpected {result.unexpected_keys}")
    model = model.to(torch.float32).eval()

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
        report = {"source": str(weights), "source_sha256": file_sha256(weights),
                  "dropped_keys": dropped, "renamed_keys": renamed, "ignored_config_keys": ignored}
        (tmp / "conversion.json").write_text(json.dumps(report, indent=2) + "\n")
        names = sorted(p.name for p in tmp.iterdir() if p.is_file())
        (tmp / "sha256.txt").write_text("".join(f"{file_sha256(tmp / n)}  {n}\n" for n in names))
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deepaq convert-mert",
        description="Convert a MERT hub snapshot (folder or bare pytorch_model.bin) into a local "
                    "HubertModel folder for backbone_args: {pretrained: DST}.")
    parser.add_argument("src", help="snapshot folder, pytorch_model.bin/.safetensors, or a hub id "
                                    "with --allow-download")
    parser.add_argument("dst", help="output folder (must not exist unless --force)")
    parser.add_argument("--config", help="MERT/Hubert config.json to use (default: SRC's, or the "
                                         "MERT-v1-95M shape for a bare weights file)")
    parser.add_argument("--allow-download", action="store_true",
                        help="accept a hub id and fetch it with huggingface_hub (no code files)")
    parser.add_argument("--force", action="store_true", help="replace DST if it exists")
    args = parser.parse_args(argv)
    try:
        out = convert(args.src, args.dst, args.config, args.allow_download, args.force)
    except (ConversionError, FileNotFoundError, json.JSONDecodeError) as exc:
        print(f"deepaq convert-mert: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0

