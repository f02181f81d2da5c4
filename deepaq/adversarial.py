"""Domain-adversarial training (DANN, Ganin & Lempitsky 2015) for quality embeddings.

Why: a quality metric must not learn *which dataset / codec family / recording setup* an item comes
from when that happens to correlate with the label in the training corpus. A small discriminator
tries to predict the item's domain from the pooled embedding; a gradient-reversal layer between
them makes the encoder *maximise* the discriminator's loss, so the embedding loses the domain
information that the quality loss does not need.

Pieces:

- :func:`grad_reverse` / :class:`GradientReversal`: identity forward, ``-lambda * grad`` backward.
- :func:`dann_lambda`: the DANN ramp ``2 / (1 + exp(-gamma p)) - 1`` over training progress p.
- :class:`DomainDiscriminator`: an MLP on the pooled embedding -> domain logits.
- :class:`DomainAdversarialLoss`: the pluggable training term (``aux_losses`` of
  :class:`deepaq.training.module.DeePAQModule`): cross-entropy of the discriminator behind the
  reversal. Domain labels come from one of three strategies (:data:`STRATEGIES`):
  ``source`` (a manifest column: dataset, codec, any column), ``kmeans`` (K clusters of
  frozen-backbone embeddings computed before training), ``random`` (K random labels: the control).
- :func:`linear_probe`: cross-validated logistic-regression accuracy of domain from embeddings,
  the evidence (before vs after DAT) that the nuisance was removed.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

STRATEGIES = ("source", "kmeans", "random")
SCHEDULES = ("constant", "dann")
IGNORE = -100  # cross-entropy's ignore_index: items without a domain label


# -- gradient reversal ---------------------------------------------------------------------------

class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, lambd: float) -> Tensor:
        ctx.lambd = float(lambd)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad.neg() * ctx.lambd, None


def grad_reverse(x: Tensor, lambd: float = 1.0) -> Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-lambd`` in the backward pass."""
    return _GradReverse.apply(x, lambd)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's ramp from 0 (start) to ~1 (end): ``2 / (1 + exp(-gamma * p)) - 1``, p in [0, 1].

    Why: at the start the discriminator is random and its reversed gradient is noise; ramping the
    reversal in lets the quality loss shape the embedding first.
    """
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


class GradientReversal(nn.Module):
    """Gradient-reversal layer with strength ``lambda_max`` times an optional schedule.

    ``schedule="constant"``: always ``lambda_max``; ``"dann"``: ``lambda_max * dann_lambda(p)``
    where p is the training progress set with :meth:`set_progress` (0..1).
    """

    def __init__(self, lambda_max: float = 1.0, schedule: str = "constant", gamma: float = 10.0):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.lambda_max, self.schedule, self.gamma = float(lambda_max), schedule, float(gamma)
        self.progress = 0.0

    def set_progress(self, progress: float) -> None:
        self.progress = min(max(float(progress), 0.0), 1.0)

    @property
    def lambd(self) -> float:
        if self.schedule == "dann":
            return self.lambda_max * dann_lambda(self.progress, self.gamma)
        return self.lambda_max

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.lambd)


class DomainDiscriminator(nn.Module):
    """MLP ``in_dim -> hidden... -> num_domains`` logits (ReLU, optional dropout)."""

    def __init__(self, in_dim: int, num_domains: int, hidden: Sequence[int] = (64,),
                 dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        prev = int(in_dim)
        for h in hidden:
            layers += [nn.Linear(prev, int(h)), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            prev = int(h)
        layers.append(nn.Linear(prev, int(num_domains)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def pool_embeddings(embeddings: Tensor) -> Tensor:
    """[B, D] as is; frame embeddings [B, F, D] (padded frames exactly zero) -> mean of valid."""
    if embeddings.dim() == 2:
        return embeddings
    valid = (embeddings.abs().amax(-1) > 0).to(embeddings.dtype)              # [B, F]
    return (embeddings * valid[..., None]).sum(1) / valid.sum(1).clamp(min=1)[:, None]


# -- domain labels -------------------------------------------------------------------------------

def source_labels(rows: Sequence[dict], column: str,
                  vocabulary: Sequence[Any] | None = None) -> tuple[dict[str, int], list[Any]]:
    """key -> domain index from a manifest column (values in ``vocabulary`` order, else sorted).

    A value missing from a given ``vocabulary`` gets no label (ignored by the loss).
    """
    if rows and all(column not in r for r in rows):
        raise KeyError(f"no manifest row has the domain column {column!r}")
    values = [r.get(column) for r in rows]
    vocab = list(vocabulary) if vocabulary is not None else sorted({_norm(v) for v in values})
    index = {_norm(v): i for i, v in enumerate(vocab)}
    labels = {str(r["key"]): index[_norm(v)] for r, v in zip(rows, values) if _norm(v) in index}
    return labels, vocab


def _norm(value: Any) -> str:
    return "null" if value is None else str(value)


def random_labels(keys: Sequence[str], k: int, seed: int = 0) -> dict[str, int]:
    """K random domain labels (seeded), the control: DAT against them should change little."""
    rng = np.random.default_rng(seed)
    return {str(key): int(v) for key, v in zip(keys, rng.integers(0, k, size=len(keys)))}


def kmeans_labels(keys: Sequence[str], features: np.ndarray, k: int = 8,
                  seed: int = 0) -> dict[str, int]:
    """K clusters (sklearn KMeans on standardised features) of per-item embeddings."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(np.asarray(features, dtype=np.float64))
    k = min(int(k), len(x))
    assign = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    return {str(key): int(v) for key, v in zip(keys, assign)}


@torch.no_grad()
def backbone_features(model: nn.Module, dataset: torch.utils.data.Dataset,
                      batch_size: int = 8, progress: bool = True) -> tuple[list[str], np.ndarray]:
    """(keys, [N, H]) frozen-backbone features: the time mean of the model's chosen hidden states.

    Why the backbone and not the model's output: before training the head is random, while the
    backbone's hidden states say what the pretrained network hears (recording, genre, codec).
    """
    from deepaq.model import masked_mean
    from deepaq.training.data import collate_items

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         collate_fn=collate_items)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    keys, feats = [], []
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc="domain features", unit="batch", leave=False)
    for batch in loader:
        hidden, frames = model.backbone(batch["item"].to(device), batch["item_lengths"].to(device))
        pooled = torch.cat([masked_mean(hidden[i], frames) for i in model.layer_indices], dim=-1)
        feats.append(pooled.float().cpu().numpy())
        keys += list(batch["key"])
    model.train(was_training)
    return keys, np.concatenate(feats)


@torch.no_grad()
def embed_dataset(model: nn.Module, dataset: torch.utils.data.Dataset, batch_size: int = 8,
                  ) -> tuple[list[str], np.ndarray]:
    """(keys, [N, D]) pooled model embeddings of a dataset's items (for the linear probe)."""
    from deepaq.training.data import collate_items

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         collate_fn=collate_items)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    keys, out = [], []
    for batch in loader:
        emb = model(batch["item"].to(device), batch["item_lengths"].to(device))
        out.append(pool_embeddings(emb).float().cpu().numpy())
        keys += list(batch["key"])
    model.train(was_training)
    return keys, np.concatenate(out)


# -- the loss ------------------------------------------------------------------------------------

class DomainAdversarialLoss(nn.Module):
    """Discriminator cross-entropy behind gradient reversal: add it as an ``aux_losses`` entry.

    Total loss = quality loss + weight x this term; the reversal (``lambda_max``, ``schedule``)
    sets how hard the encoder fights the discriminator (the discriminator itself always learns at
    full strength).

    Args:
        in_dim: embedding size (the model's ``embed_dim``).
        strategy: "source" | "kmeans" | "random" (see the module docstring).
        column: manifest column for "source" (e.g. ``codec``, ``dataset``).
        vocabulary: optional fixed list of the column's values (the others get no label).
        num_domains: K for "kmeans"/"random" (default 8); for "source" the vocabulary size (given,
            or found from the training rows; then it must be set when the vocabulary is unknown
            at construction - the discriminator is built before training starts).
        hidden, dropout: discriminator MLP.
        lambda_max, schedule, gamma: reversal strength and its ramp.
        seed: for "kmeans"/"random".
        labels: a precomputed ``{key: domain}`` mapping (skips the strategy).
    """

    def __init__(self, in_dim: int, strategy: str = "source", column: str | None = None,
                 vocabulary: list | None = None, num_domains: int | None = None,
                 hidden: list[int] | tuple[int, ...] = (64,), dropout: float = 0.0,
                 lambda_max: float = 1.0, schedule: str = "dann", gamma: float = 10.0,
                 seed: int = 0, labels: dict[str, int] | None = None):
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if strategy == "source" and not column and labels is None:
            raise ValueError("strategy 'source' needs column (a manifest column name)")
        if num_domains is None:
            num_domains = len(vocabulary) if vocabulary is not None else 8
        if num_domains < 2:
            raise ValueError("need at least 2 domains")
        self.strategy, self.column, self.seed = strategy, column, int(seed)
        self.vocabulary = None if vocabulary is None else list(vocabulary)
        self.num_domains = int(num_domains)
        self.reversal = GradientReversal(lambda_max, schedule, gamma)
        self.discriminator = DomainDiscriminator(in_dim, self.num_domains, hidden, dropout)
        self.labels: dict[str, int] | None = dict(labels) if labels is not None else None
        self._trainer_ref: Any = None

    # hooks -----------------------------------------------------------------------------------
    def assign_labels(self, rows: Sequence[dict], model: nn.Module | None = None,
                      dataset: torch.utils.data.Dataset | None = None) -> dict[str, int]:
        """Compute ``{key: domain}`` for the training rows with the chosen strategy."""
        keys = [str(r["key"]) for r in rows]
        if self.strategy == "source":
            labels, vocab = source_labels(rows, self.column, self.vocabulary)
            if len(vocab) > self.num_domains:
                raise ValueError(f"column {self.column!r} has {len(vocab)} values {vocab[:10]} but "
                                 f"num_domains={self.num_domains}; set num_domains or vocabulary")
            self.vocabulary = vocab
        elif self.strategy == "random":
            labels = random_labels(keys, self.num_domains, self.seed)
        else:
            if model is None or dataset is None:
                raise ValueError("strategy 'kmeans' needs the model and the training dataset")
            feat_keys, feats = backbone_features(model, dataset)
            labels = kmeans_labels(feat_keys, feats, self.num_domains, self.seed)
        self.labels = labels
        return labels

    def setup_training(self, pl_module: Any) -> None:
        """Called by the LightningModule at fit start: labels from the training data, progress
        from the trainer (for the lambda schedule)."""
        trainer = pl_module.trainer
        self._trainer_ref = weakref.ref(trainer)
        if self.labels is not None:
            return
        dm = trainer.datamodule
        dataset = dm._dataset("train") if hasattr(dm, "_dataset") else dm.datasets["train"]
        self.assign_labels(dataset.rows, pl_module.model, dataset)
        counts = np.bincount(list(self.labels.values()), minlength=self.num_domains)
        from lightning.pytorch.utilities import rank_zero_info

        rank_zero_info(f"deepaq DAT: strategy {self.strategy}, {self.num_domains} domains, "
                       f"items per domain {counts.tolist()}")

    def _progress(self) -> float | None:
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        if trainer is None:
            return None
        total = trainer.estimated_stepping_batches
        if not total or not math.isfinite(total):
            return None
        return trainer.global_step / total

    def domain_targets(self, keys: Sequence[str], device: torch.device) -> Tensor:
        if self.labels is None:
            raise RuntimeError("DomainAdversarialLoss has no domain labels: pass labels=..., call "
                               "assign_labels(rows) or train through DeePAQModule")
        return torch.tensor([self.labels.get(str(k), IGNORE) for k in keys], dtype=torch.long,
                            device=device)

    def terms(self, embeddings: Tensor, batch: dict | None = None,
              domains: Tensor | None = None, progress: float | None = None) -> dict[str, Tensor]:
        """{"loss": cross-entropy, "accuracy": discriminator accuracy, "lambda"}.

        ``domains`` [B] (long, -100 = none) overrides the label lookup by ``batch["key"]``.
        """
        if progress is None:
            progress = self._progress()
        if progress is not None:
            self.reversal.set_progress(progress)
        pooled = pool_embeddings(embeddings)
        if domains is None:
            domains = self.domain_targets(batch["key"], pooled.device)
        domains = domains.to(pooled.device).long()
        logits = self.discriminator(self.reversal(pooled))
        valid = domains != IGNORE
        if not bool(valid.any()):
            zero = logits.sum() * 0.0
            return {"loss": zero, "accuracy": zero.detach(), "lambda": zero.detach()}
        loss = nn.functional.cross_entropy(logits, domains, ignore_index=IGNORE)
        acc = (logits.argmax(-1)[valid] == domains[valid]).float().mean()
        return {"loss": loss, "accuracy": acc.detach(),
                "lambda": torch.tensor(self.reversal.lambd, device=pooled.device)}

    def forward(self, embeddings: Tensor, batch: dict | None = None,
                domains: Tensor | None = None, progress: float | None = None) -> Tensor:
        return self.terms(embeddings, batch, domains, progress)["loss"]


# -- the probe -----------------------------------------------------------------------------------

def linear_probe(features: np.ndarray, domains: Sequence[int], folds: int = 5,
                 seed: int = 0) -> dict[str, float]:
    """Cross-validated accuracy of a logistic regression predicting the domain from embeddings.

    Returns ``{"accuracy", "std", "chance", "folds", "items"}``; chance = the majority class
    share. Near chance after DAT = the embedding no longer carries the domain linearly.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(domains)
    keep = y != IGNORE
    x, y = x[keep], y[keep]
    _, counts = np.unique(y, return_counts=True)
    folds = int(min(folds, counts.min()))
    if len(counts) < 2 or folds < 2:
        raise ValueError("linear probe needs >= 2 domains with >= 2 items each")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(clf, x, y, cv=cv)
    return {"accuracy": float(scores.mean()), "std": float(scores.std()),
            "chance": float(counts.max() / counts.sum()), "folds": folds, "items": len(y)}


def probe_report(before: dict[str, float], after: dict[str, float]) -> str:
    """Two probe results -> a short text for logs and READMEs."""
    return (f"domain linear probe (chance {after['chance']:.3f}): accuracy before "
            f"{before['accuracy']:.3f} +- {before['std']:.3f}, after {after['accuracy']:.3f} "
            f"+- {after['std']:.3f} ({after['items']} items, {after['folds']}-fold CV)")


def _dat_losses(pl_module: Any) -> list[DomainAdversarialLoss]:
    comps = [getattr(pl_module, "loss_fn", None), *getattr(pl_module, "aux_losses", {}).values()]
    return [c for c in comps if isinstance(c, DomainAdversarialLoss)]


def _probe_callback_base():
    import lightning.pytorch as pl

    return pl.Callback


class DomainProbe(_probe_callback_base()):
    """Lightning callback: linear-probe domain accuracy of the embedding before and after fit.

    Uses the domain labels of the run's :class:`DomainAdversarialLoss` (or, without DAT - the
    baseline - ``column``, a manifest column, so both runs are measured the same way) on the
    training split (cross-validated, so the probe is tested on items it did not fit). Writes
    ``domain_probe.json`` to the trainer's log folder and logs the text report.
    """

    def __init__(self, column: str | None = None, folds: int = 5, batch_size: int = 8,
                 filename: str = "domain_probe.json"):
        self.column, self.folds, self.batch_size, self.filename = column, folds, batch_size, filename
        self.before: dict | None = None
        self.after: dict | None = None

    def _labels(self, pl_module: Any, rows: Sequence[dict]) -> dict[str, int]:
        losses = _dat_losses(pl_module)
        if losses:
            losses[0].setup_training(pl_module)
            return losses[0].labels
        if not self.column:
            raise ValueError("DomainProbe needs column= when the run has no DomainAdversarialLoss")
        return source_labels(rows, self.column)[0]

    def _probe(self, trainer: Any, pl_module: Any) -> dict:
        dataset = trainer.datamodule._dataset("train")
        labels = self._labels(pl_module, dataset.rows)
        keys, emb = embed_dataset(pl_module.model, dataset, self.batch_size)
        return linear_probe(emb, [labels.get(k, IGNORE) for k in keys], self.folds)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.before = self._probe(trainer, pl_module)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        import json
        from pathlib import Path

        from lightning.pytorch.utilities import rank_zero_info

        from deepaq.records import atomic_write_text

        self.after = self._probe(trainer, pl_module)
        rank_zero_info("deepaq: " + probe_report(self.before, self.after))
        if trainer.is_global_zero:
            folder = Path(trainer.log_dir or trainer.default_root_dir)
            atomic_write_text(folder / self.filename, json.dumps(
                {"before": self.before, "after": self.after}, indent=2) + "\n")
