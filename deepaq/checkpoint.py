"""Checkpoint folders: what was trained, how to rebuild it, and which backbone it belongs to.

A checkpoint is a folder, written atomically (built in a temp folder beside it, then renamed)::

    config.yaml        {"model": QualityModel.config(), "metadata": {...},
                        "format": {"version": 1, "weights": "trainable" | "full"}}
    model.safetensors  the trainable tensors (LoRA adapters + head) when the backbone comes from a
                       pretrained folder; every tensor when the backbone is random-init or LoRA
                       was merged into it ("full": then config.yaml describes the backbone's
                       architecture itself, so the folder is no longer needed)
    calibration.json   distance -> MOS calibration (e.g. {"kind": "monotonic_cubic", ...}), optional
    backbone.json      {"name", "path", "sha256"} of the pretrained backbone folder, if any
                       (with "role": "provenance" in a full checkpoint, which needs no folder)

Loading rebuilds the model from ``config.yaml`` (data, no pickle), checks that the pretrained
backbone folder is byte-identical to the one trained on (sha256 of its model.safetensors) and
refuses any other, then loads the tensors with safetensors.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deepaq.model import QualityModel

FORMAT_VERSION = 1
FILES = ("config.yaml", "model.safetensors", "calibration.json", "backbone.json")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, malformed or does not fit the model it describes."""


class BackboneMismatchError(CheckpointError):
    """The pretrained backbone folder differs from the one the checkpoint was trained on."""


def _plain(data: Any) -> Any:
    """JSON/YAML-safe copy (numpy scalars, Paths; inf -> "inf" as in deepaq.records)."""
    from deepaq.records import dumps

    return json.loads(dumps({"v": data}))["v"]


def _replace_dir(tmp: Path, directory: Path) -> None:
    if directory.exists():
        if not directory.is_dir() or (any(directory.iterdir())
                                      and not (directory / "config.yaml").is_file()):
            raise CheckpointError(f"{directory} exists and is not a checkpoint folder; refusing "
                                  "to replace it")
        old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
        os.replace(directory, old / "ckpt")
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)


def save_checkpoint(model: QualityModel, directory: str | os.PathLike,
                    calibration: dict | None = None, metadata: dict | None = None,
                    full: bool | None = None) -> Path:
    """Write ``model`` to the checkpoint folder ``directory`` (replaced atomically if it exists).

    ``full``: save every tensor (True), only the trainable ones (False), or decide (None): full
    when the backbone is random-init or LoRA was merged into a pretrained backbone.
    """
    import yaml
    from safetensors.torch import save_file

    from deepaq.backbones import folder_sha256

    directory = Path(directory).expanduser()
    pretrained = getattr(model.backbone, "pretrained_path", None)
    if full is None:
        full = pretrained is None or bool(getattr(model, "lora_merged", False))
    if full:
        tensors = model.state_dict()
    else:
        tensors = {n: p for n, p in model.named_parameters() if p.requires_grad}
    tensors = {n: t.detach().to("cpu").contiguous().clone() for n, t in tensors.items()}
    config = model.config()
    provenance = None
    if pretrained is not None:
        try:
            sha = folder_sha256(pretrained)
        except FileNotFoundError:
            if not full:
                raise
            sha = None  # the folder is gone, and a full checkpoint does not need it
        provenance = {"name": config["backbone"], "path": str(pretrained), "sha256": sha}
        if full:  # every weight is in the file: rebuild the architecture without the folder
            config["backbone_args"] = model.backbone.standalone_args()
            provenance["role"] = "provenance"
    doc = {"model": _plain(config), "metadata": _plain(metadata or {}),
           "format": {"version": FORMAT_VERSION, "weights": "full" if full else "trainable"}}

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        (tmp / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if calibration is not None:
            (tmp / "calibration.json").write_text(json.dumps(_plain(calibration), indent=2) + "\n",
                                                  encoding="utf-8")
        if provenance is not None:
            (tmp / "backbone.json").write_text(json.dumps(provenance, indent=2) + "\n",
                                               encoding="utf-8")
        _replace_dir(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_checkpoint_config(directory: str | os.PathLike) -> dict:
    """The parsed ``config.yaml`` of a checkpoint (model config, metadata, format)."""
    import yaml

    path = Path(directory).expanduser() / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint (no config.yaml)")
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        raise CheckpointError(f"{path}: no 'model' mapping")
    return doc


def load_checkpoint(directory: str | os.PathLike, device: str = "cpu",
                    backbone_path: str | os.PathLike | None = None
                    ) -> tuple[QualityModel, dict | None]:
    """(model in eval mode on ``device``, calibration dict or None) from a checkpoint folder.

    ``backbone_path`` points at the pretrained backbone folder when it moved since training; it
    must have the recorded sha256.
    """
    from safetensors.torch import load_file

    from deepaq.backbones import folder_sha256
    from deepaq.model import QualityModel

    directory = Path(directory).expanduser()
    doc = read_checkpoint_config(directory)
    cfg = doc["model"]
    weights_kind = (doc.get("format") or {}).get("weights", "trainable")
    backbone_file = directory / "backbone.json"
    if weights_kind == "full":
        pass  # self-contained: backbone.json, if any, only records where the weights came from
    elif backbone_file.is_file():
        info = json.loads(backbone_file.read_text(encoding="utf-8"))
        folder = Path(backbone_path or info["path"]).expanduser()
        if not folder.is_dir():
            raise CheckpointError(f"{directory}: backbone folder {folder} not found (trained on "
                                  f"{info['path']}); pass backbone_path")
        sha = folder_sha256(folder)
        if sha != info["sha256"]:
            raise BackboneMismatchError(
                f"{directory} was trained on backbone {info['path']} (sha256 {info['sha256']}), "
                f"but {folder} has sha256 {sha}: refusing a different backbone")
        cfg = {**cfg, "backbone_args": {**(cfg.get("backbone_args") or {}), "pretrained": str(folder)}}
    else:
        raise CheckpointError(f"{directory}: trainable-only weights but no backbone.json")

    model = QualityModel(**cfg)
    weights_path = directory / "model.safetensors"
    if not weights_path.is_file():
        raise CheckpointError(f"{directory}: no model.safetensors")
    tensors = load_file(str(weights_path), device="cpu")
    own = model.state_dict()
    unexpected = sorted(set(tensors) - set(own))
    if weights_kind == "full":
        missing = sorted(set(own) - set(tensors))
    else:
        missing = sorted(n for n, p in model.named_parameters() if p.requires_grad and n not in tensors)
    if unexpected or missing:
        raise CheckpointError(f"{directory}: weights do not fit config.yaml: missing {missing[:5]}"
                              f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                              f"{' ...' if len(unexpected) > 5 else ''}")
    bad_shape = [n for n, t in tensors.items() if tuple(t.shape) != tuple(own[n].shape)]
    if bad_shape:
        raise CheckpointError(f"{directory}: tensor shapes differ from config.yaml: {bad_shape[:5]}")
    model.load_state_dict(tensors, strict=weights_kind == "full")
    calibration = None
    if (directory / "calibration.json").is_file():
        calibration = json.loads((directory / "calibration.json").read_text(encoding="utf-8"))
    return model.to(device).eval(), calibration
