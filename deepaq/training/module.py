"""The LightningModule that fine-tunes a :class:`deepaq.model.QualityModel`.

Why a thin wrapper: the model, loss, calibration and checkpoint format live in their own modules
so that scoring never imports Lightning; this class only wires them into Lightning's loop
(optimiser, LR schedule, validation correlations, best-model export).

Losses are pluggable without touching the loop (issue 6: domain-adversarial, MultiGauss heads):
``loss`` and every entry of ``aux_losses`` name a class (``class_path``, default RnCLoss for
``loss``) built with the other keys as arguments. Its ``forward`` receives arguments *by name*:
``embeddings`` (or ``features``), ``batch``, ``model``, ``lengths`` and any batch field
(``visqol``, ``bitrate``, ``excerpt``, ``coded``, or manifest columns listed in the data module's
``extra_columns``). It returns a scalar tensor or a dict of named terms (summed; ``loss`` if
present is taken as the total). Aux modules are submodules, so their parameters train too and are
stored in the Lightning checkpoint.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

DEFAULT_LOSS = "deepaq.losses.RnCLoss"


def import_object(path: str) -> Any:
    """``"package.module.Name"`` (or ``"package.module:Name"``) -> the object."""
    module, _, name = path.replace(":", ".").rpartition(".")
    if not module:
        raise ValueError(f"not a dotted class path: {path!r}")
    return getattr(importlib.import_module(module), name)


def build_component(spec: dict | None, default_class: str | None = None) -> torch.nn.Module:
    """Instantiate ``{class_path: ..., init_args: {...}}`` or ``{class_path: ..., **kwargs}``."""
    spec = dict(spec or {})
    class_path = spec.pop("class_path", default_class)
    if class_path is None:
        raise ValueError(f"component needs a class_path: {spec}")
    spec.pop("weight", None)
    kwargs = dict(spec.pop("init_args", {}) or {})
    kwargs.update(spec)
    return import_object(class_path)(**kwargs)


def call_by_name(fn: torch.nn.Module, available: dict[str, Any]) -> Any:
    """Call ``fn`` passing each of its named parameters from ``available`` (missing -> default).

    A loss with a ``terms`` method (like RnCLoss: a dict of named terms) is called through it, so
    every term gets logged.
    """
    method = getattr(fn, "terms", None) or fn.forward
    params = inspect.signature(method).parameters
    kwargs, missing = {}, []
    for name, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in available:
            kwargs[name] = available[name]
        elif p.default is inspect.Parameter.empty:
            missing.append(name)
    if missing:
        raise TypeError(f"{type(fn).__name__}.{method.__name__} needs {missing}; available: "
                        f"{sorted(available)}")
    return method(**kwargs) if method is not fn.forward else fn(**kwargs)


def loss_terms(value: Any, prefix: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A loss result (tensor or dict of terms) -> (total, terms to log)."""
    if isinstance(value, dict):
        terms = {f"{prefix}/{k}": v for k, v in value.items() if torch.is_tensor(v)}
        total = value["loss"] if "loss" in value else sum(value.values())
        return total, terms
    return value, {prefix: value}


def _median_item_seconds(manifest: str | Path) -> float | None:
    from deepaq.records import read_jsonl

    try:
        seconds = [r["num_samples"] / r["sample_rate"] for r in read_jsonl(manifest)
                   if r.get("num_samples") and r.get("sample_rate")]
    except (OSError, ValueError, KeyError):
        return None
    return float(np.median(seconds)) if seconds else None


def pairwise_distances(model: torch.nn.Module, embeddings: torch.Tensor) -> torch.Tensor:
    """[B, B] ``model.distance`` between all pairs (for frame-level embeddings [B, F, D])."""
    b = embeddings.shape[0]
    a = embeddings[:, None].expand(b, b, *embeddings.shape[1:]).reshape(b * b,
                                                                        *embeddings.shape[1:])
    c = embeddings[None, :].expand(b, b, *embeddings.shape[1:]).reshape(b * b,
                                                                        *embeddings.shape[1:])
    return model.distance(a, c).reshape(b, b)


def correlations(distance: np.ndarray, label: np.ndarray,
                 group: np.ndarray | None = None) -> dict[str, float]:
    """Spearman/Pearson of ``-distance`` with the label (and mean Spearman within groups).

    ``-distance`` because a larger embedding distance means a worse item, while ViSQOL is a MOS
    (higher is better): a good metric gives positive correlations.
    """
    from scipy.stats import pearsonr, spearmanr

    keep = np.isfinite(distance) & np.isfinite(label)
    d, y = distance[keep], label[keep]
    out = {"spearman": math.nan, "pearson": math.nan, "spearman_within": math.nan}
    if d.size >= 3 and np.ptp(d) > 0 and np.ptp(y) > 0:
        out["spearman"] = float(spearmanr(-d, y).statistic)
        out["pearson"] = float(pearsonr(-d, y).statistic)
    if group is not None:
        g = group[keep]
        within = []
        for value in np.unique(g):
            sel = g == value
            if sel.sum() >= 3 and np.ptp(d[sel]) > 0 and np.ptp(y[sel]) > 0:
                within.append(float(spearmanr(-d[sel], y[sel]).statistic))
        if within:
            out["spearman_within"] = float(np.mean(within))
    return out


class DeePAQModule(pl.LightningModule):
    """Train a QualityModel with Rank-N-Contrast; validate by distance-vs-ViSQOL correlation.

    Args:
        model: arguments of ``deepaq.model.QualityModel`` (backbone, layers, lora, ...).
        loss: the main loss, ``{class_path?, **args}``; default ``deepaq.losses.RnCLoss``.
        aux_losses: name -> ``{class_path, weight, **args}``; added to the loss times ``weight``.
        lr, weight_decay, betas: AdamW over the trainable parameters.
        lr_factor, lr_patience: ReduceLROnPlateau on ``monitor`` (mode max).
        monitor: the validation metric that picks the best model (and drives the LR schedule).
        init_checkpoint: start from a deepaq checkpoint folder (its own model config wins over
            ``model``), e.g. for fine-tuning after weakly supervised pretraining.
        export_dir: where the best model goes at the end of ``fit`` (``save_checkpoint`` format);
            default ``<log_dir>/model``. ``None`` and no trainer log dir: ``default_root_dir/model``.
        calibrate: fit a monotonic cubic distance -> ViSQOL on the val split and store it.
        val_label: the batch column the validation distances are correlated with (default
            ``visqol``; e.g. ``quality`` for a JND corpus, or a MOS column listed in
            ``data.extra_columns``).
        cache_embeddings: keep each clip's embedding after its first pass and reuse it. Only for
            models whose embedding has no trainable parameter (a fixed front end with the
            learning in the distance, like ``distance: nsim`` with ``head: none``) and
            deterministic clips (no random crops); checked at fit start. Why: the embedding is
            then the same every epoch, and recomputing it is nearly all of the step time.

    Loss components may define ``setup_training(pl_module)`` (called at fit start, e.g. to assign
    domain labels) and ``export(directory)`` (called after the model is saved, e.g. a MOS head);
    their weights follow the best validated epoch like the model's.
    """

    def __init__(self, model: dict | None = None, loss: dict | None = None,
                 aux_losses: dict[str, dict] | None = None, lr: float = 1e-4,
                 weight_decay: float = 0.01, betas: tuple[float, float] = (0.9, 0.999),
                 lr_factor: float = 0.99, lr_patience: int = 10, monitor: str = "val/spearman",
                 init_checkpoint: str | None = None, export_dir: str | None = None,
                 calibrate: bool = True, val_label: str = "visqol",
                 cache_embeddings: bool = False):
        super().__init__()
        self.save_hyperparameters()
        if init_checkpoint:
            from deepaq.checkpoint import load_checkpoint

            self.model, _ = load_checkpoint(init_checkpoint)
            self.model.train()
        else:
            from deepaq.model import QualityModel

            self.model = QualityModel(**(model or {}))
        self.loss_fn = build_component(loss, DEFAULT_LOSS)
        self.aux_losses = torch.nn.ModuleDict(
            {name: build_component(spec) for name, spec in (aux_losses or {}).items()})
        self.aux_weights = {name: float((spec or {}).get("weight", 1.0))
                            for name, spec in (aux_losses or {}).items()}
        self.resolved_config: str | None = None  # set by the CLI's SaveConfigCallback
        self._eval_outputs: list[dict[str, torch.Tensor]] = []
        self.best: dict[str, Any] | None = None
        self.exported_to: Path | None = None
        self._embedding_cache: dict[tuple, torch.Tensor] = {}

    # -- setup -----------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        rank_zero_info(f"deepaq: trainable parameters {trainable:,} / {total:,} "
                       f"({100.0 * trainable / max(total, 1):.2f} %)")
        dm = getattr(self.trainer, "datamodule", None)
        rate = getattr(dm, "sample_rate", None)
        model_rate = getattr(self.model, "sample_rate", None)
        if rate is not None and model_rate is not None and int(rate) != int(model_rate):
            raise ValueError(f"data.sample_rate={rate} but the model expects {model_rate} Hz; "
                             f"set data.sample_rate: {model_rate} in the recipe")
        if self.hparams.cache_embeddings:
            self._check_cacheable(dm)
        for fn in self._components().values():
            if hasattr(fn, "setup_training"):
                fn.setup_training(self)

    def _check_cacheable(self, dm: Any) -> None:
        """cache_embeddings is only exact for a parameter-free embedding of fixed clips."""
        learned = [name for name, p in self.model.named_parameters()   # the distance may learn
                   if p.requires_grad and name.startswith(("backbone.", "head."))]
        if learned:
            raise ValueError(f"cache_embeddings: the embedding has trainable parameters "
                             f"({', '.join(learned[:3])}, ...); it would go stale")
        if getattr(dm, "crop_seconds", None):
            raise ValueError("cache_embeddings needs whole clips: set data.crop_seconds: null")

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor, keys: list) -> torch.Tensor:
        """The model's embeddings of a batch, through the cache when ``cache_embeddings``."""
        if not self.hparams.cache_embeddings:
            return self.model(wave, lengths)
        missing = [i for i, key in enumerate(keys) if key not in self._embedding_cache]
        if missing:
            with torch.no_grad():
                emb, frames = self.model(wave[missing], lengths[missing], return_frame_lengths=True)
            for j, i in enumerate(missing):
                self._embedding_cache[keys[i]] = emb[j, :frames[j]] if emb.dim() == 3 else emb[j]
        items = [self._embedding_cache[key] for key in keys]
        if items[0].dim() == 1:
            return torch.stack(items)
        return torch.nn.utils.rnn.pad_sequence(items, batch_first=True)   # zero padding, as forward

    def _wants_distances(self) -> bool:
        """Whether any loss takes ``distances`` ([B, B] for frame embeddings costs B^2 distances)."""
        for fn in self._components().values():
            method = getattr(fn, "terms", None) or fn.forward
            if "distances" in inspect.signature(method).parameters:
                return True
        return False

    def _components(self) -> dict[str, torch.nn.Module]:
        """The main loss and the auxiliary losses, by name."""
        return {"loss_fn": self.loss_fn, **dict(self.aux_losses.items())}

    # -- training --------------------------------------------------------------------------------
    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(wave, lengths)

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Embed the batch's items and add up the main and auxiliary losses."""
        keys = [("train", i) for i in batch["index"].tolist()]
        embeddings = self.embed(batch["item"], batch["item_lengths"], keys)
        available = dict(batch)
        available.update(embeddings=embeddings, features=embeddings, batch=batch,
                         model=self.model, lengths=batch["item_lengths"], groups=batch["excerpt"])
        if embeddings.dim() == 3 and self._wants_distances():
            # frame embeddings: losses that ask for them get the model's own pair distances
            available["distances"] = pairwise_distances(self.model, embeddings)
        total, logs = loss_terms(call_by_name(self.loss_fn, available), "train/main")
        logs.pop("train/main/loss", None)
        logs.pop("train/main", None)  # the main total is logged as train/loss
        for name, fn in self.aux_losses.items():
            value, terms = loss_terms(call_by_name(fn, available), f"train/{name}")
            total = total + self.aux_weights[name] * value
            logs.update(terms)
        logs["train/loss"] = total
        return total, logs

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, logs = self.compute_loss(batch)
        size = len(batch["key"])
        self.log_dict({k: v.detach().float() for k, v in logs.items()}, on_step=True,
                      on_epoch=True, batch_size=size, prog_bar=False)
        self.log("loss", loss.detach().float(), prog_bar=True, on_step=True, on_epoch=False,
                 batch_size=size, logger=False)
        return loss

    def configure_optimizers(self) -> dict:
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
                                betas=tuple(self.hparams.betas))
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=self.hparams.lr_factor, patience=self.hparams.lr_patience)
        return {"optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "monitor": self.hparams.monitor,
                                 "interval": "epoch", "frequency": 1, "strict": False}}

    # -- validation / test -----------------------------------------------------------------------
    @torch.no_grad()
    def distances(self, batch: dict[str, Any]) -> torch.Tensor:
        """Embedding distance reference vs item: the metric itself (larger = more degraded)."""
        stage = "test" if self._trainer is not None and self.trainer.testing else "val"
        index = batch["index"].tolist()
        item = self.embed(batch["item"], batch["item_lengths"], [(stage, i) for i in index])
        ref = self.embed(batch["reference"], batch["reference_lengths"],
                         [(stage, "reference", int(e)) for e in batch["excerpt"].tolist()])
        return self.model.distance(ref, item).float()

    def _eval_step(self, batch: dict[str, Any]) -> None:
        label = batch[self.hparams.val_label]
        if not torch.is_tensor(label):
            from deepaq.records import parse_float

            label = torch.tensor([parse_float(v) for v in label])
        self._eval_outputs.append({"distance": self.distances(batch).detach(),
                                   "visqol": label.float().to(self.device),
                                   "excerpt": batch["excerpt"].float(),
                                   "index": batch["index"].float()})

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs = []

    on_test_epoch_start = on_validation_epoch_start

    def _gather_eval(self) -> dict[str, np.ndarray]:
        """All ranks' (distance, visqol, excerpt, index) as numpy, padded shards dropped."""
        if self._eval_outputs:
            local = torch.stack([torch.cat([o[k] for o in self._eval_outputs])
                                 for k in ("distance", "visqol", "excerpt", "index")], dim=1)
        else:
            local = torch.zeros(0, 4, device=self.device)
        self._eval_outputs = []
        if self.trainer.world_size > 1:
            n = torch.tensor([local.shape[0]], device=self.device)
            most = int(self.all_gather(n).max())
            pad = torch.full((most - local.shape[0], 4), math.nan, device=local.device)
            gathered = self.all_gather(torch.cat([local, pad]))  # [world, most, 4]
            local = gathered.reshape(-1, 4)
            local = local[~torch.isnan(local[:, 3])]
        arr = local.double().cpu().numpy()
        return {"distance": arr[:, 0], "visqol": arr[:, 1], "excerpt": arr[:, 2],
                "index": arr[:, 3].astype(np.int64)}

    def _bitrate_kendall(self, stage: str, data: dict[str, np.ndarray]) -> dict[str, float]:
        """``kendall_bitrate_<codec>``: per codec, mean over excerpts of Kendall's tau between
        -distance and the coded bitrate, read from the stage's manifest rows (DeePAQ's second
        label; it shows what ViSQOL-only agreement hides, e.g. Opus's order). Empty without a
        corpus datamodule."""
        from deepaq.evaluation import bitrate_kendall
        from deepaq.records import parse_float

        datamodule = getattr(self.trainer, "datamodule", None)
        dataset = getattr(datamodule, "datasets", {}).get(stage)
        if dataset is None or not len(data["index"]):
            return {}
        rows = [dataset.rows[i] for i in data["index"]]
        kbps = [parse_float(r.get("bitrate_requested_kbps", r.get("bitrate_label"))) for r in rows]
        taus = bitrate_kendall(-data["distance"], kbps, [r.get("codec") or "" for r in rows],
                               [str(r["excerpt_id"]) for r in rows])
        return {f"kendall_bitrate_{codec}": tau for codec, tau in taus.items()}

    def _log_correlations(self, stage: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        data = self._gather_eval()
        stats = correlations(data["distance"], data["visqol"], data["excerpt"])
        stats.update(self._bitrate_kendall(stage, data))
        self.log_dict({f"{stage}/{k}": float(v) for k, v in stats.items()}, sync_dist=False,
                      prog_bar=stage == "val", rank_zero_only=False)
        self.log(f"{stage}/num_items", float(len(data["distance"])), sync_dist=False)
        return stats, data

    def on_validation_epoch_end(self) -> None:
        stats, data = self._log_correlations("val")
        if self.trainer.sanity_checking:
            return
        score = stats.get(self.hparams.monitor.split("/", 1)[-1], stats["spearman"])
        if not math.isfinite(score):
            score = -math.inf
        if self.best is None or score > self.best["score"]:
            self.best = {"score": score, "epoch": int(self.current_epoch), "stats": stats,
                         "distance": data["distance"], "visqol": data["visqol"],
                         "state": self._trained_state(),
                         "components": {name: {k: v.detach().to("cpu", copy=True)
                                               for k, v in fn.state_dict().items()}
                                        for name, fn in self._components().items()}}

    def on_test_epoch_end(self) -> None:
        _, data = self._log_correlations("test")
        self.test_results = data

    # -- export ----------------------------------------------------------------------------------
    def _trained_state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of what training changes: trainable parameters and all buffers."""
        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        names |= {n for n, _ in self.model.named_buffers()}
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
                if k in names}

    def _export_dir(self) -> Path:
        if self.hparams.export_dir:
            return Path(self.hparams.export_dir)
        log_dir = self.trainer.log_dir if self.trainer is not None else None
        return Path(log_dir or self.trainer.default_root_dir) / "model"

    def on_fit_end(self) -> None:
        """Restore the best validated weights, calibrate on val, write the deliverable folder."""
        if self.best is None:
            rank_zero_info("deepaq: no validation ran, exporting the last weights uncalibrated")
        else:
            missing = self.model.load_state_dict(self.best["state"], strict=False).unexpected_keys
            if missing:
                raise RuntimeError(f"best state has unexpected keys {missing[:5]}")
            for name, fn in self._components().items():
                fn.load_state_dict(self.best["components"][name])
        if not self.trainer.is_global_zero:
            return
        self.exported_to = self.export(self._export_dir())
        rank_zero_info(f"deepaq: best model (epoch {self.best and self.best['epoch']}) "
                       f"written to {self.exported_to}")

    def export(self, directory: str | Path) -> Path:
        """Write the model (+ calibration, + resolved training config) with ``save_checkpoint``."""
        from deepaq.checkpoint import save_checkpoint
        from deepaq.records import atomic_write_text

        calibration = None
        metadata: dict[str, Any] = {"trained_with": "deepaq fit",
                                    "monitor": self.hparams.monitor}
        if self.best is not None:
            metadata.update(best_epoch=self.best["epoch"],
                            val={k: round(v, 6) for k, v in self.best["stats"].items()},
                            val_items=len(self.best["distance"]))
            if self.hparams.calibrate and len(self.best["distance"]) >= 2:
                from deepaq.calibration import MonotonicCubic

                calibration = MonotonicCubic().fit(self.best["distance"],
                                                   self.best["visqol"]).to_dict()
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and getattr(dm, "manifest", None):
            metadata["manifest"] = str(dm.manifest)
            window = getattr(dm, "crop_seconds", None) or _median_item_seconds(dm.manifest)
            if window:  # scoring windows = what the model saw in training
                metadata["window_seconds"] = round(float(window), 3)
        was_training = self.model.training
        self.model.eval()
        out = Path(save_checkpoint(self.model, directory, calibration=calibration,
                                   metadata=metadata))
        self.model.train(was_training)
        for fn in self._components().values():
            if hasattr(fn, "export"):
                fn.export(out)
        text = self.resolved_config
        if text is None:
            import yaml

            text = yaml.safe_dump(_plain(dict(self.hparams)), sort_keys=False)
        atomic_write_text(out / "train_config.yaml", text)
        return out


def _plain(value: Any) -> Any:
    """Hyperparameters -> YAML-safe builtins."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return copy.deepcopy(value)
