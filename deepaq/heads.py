"""MultiGauss MOS head: a mean vector and a full precision matrix over one or several MOS aspects.

Why: listening-test MOS are noisy, and aspects (e.g. production quality PQ, complexity PC,
enjoyment CE, usefulness CU) are correlated. Predicting a multivariate Gaussian (mean + Cholesky
factor of the precision, trained by the exact Gaussian negative log-likelihood) gives each score
an uncertainty and learns how the aspects co-vary, instead of a bare point estimate.

Parameterisation: ``P = L L^T`` with L lower-triangular and a strictly positive diagonal
(softplus + ``min_diag``), so P is positive definite by construction and

    NLL(y) = K/2 log(2 pi) - sum_k log L_kk + 1/2 || L^T (y - mu) ||^2

needs no matrix inverse or determinant. The covariance ``P^-1`` (for the reported standard
deviations) comes from ``torch.cholesky_inverse``.

The head rides on the pooled quality embedding: :class:`MultiGaussLoss` trains it as a loss term
of :class:`deepaq.training.module.DeePAQModule` (``loss:`` or ``aux_losses:``), and it is saved
beside the model in the checkpoint folder (``mos_head.yaml`` + ``mos_head.safetensors``) so that
scoring can print the predicted MOS and standard deviation per aspect.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

HEAD_CONFIG = "mos_head.yaml"
HEAD_WEIGHTS = "mos_head.safetensors"


def gaussian_nll(mean: Tensor, prec_chol: Tensor, target: Tensor) -> Tensor:
    """Per-item NLL [B] of ``target`` [B, K] under N(mean [B, K], (L L^T)^-1), L = ``prec_chol``."""
    k = mean.shape[-1]
    diff = (target - mean).unsqueeze(-1)                                       # [B, K, 1]
    z = prec_chol.transpose(-1, -2) @ diff                                     # L^T (y - mu)
    log_det_half = torch.log(torch.diagonal(prec_chol, dim1=-2, dim2=-1)).sum(-1)
    return 0.5 * k * math.log(2 * math.pi) - log_det_half + 0.5 * z.pow(2).sum((-1, -2))


def covariance(prec_chol: Tensor) -> Tensor:
    """Covariance ``(L L^T)^-1`` [B, K, K] from the precision's Cholesky factor."""
    return torch.cholesky_inverse(prec_chol)


class MultiGaussHead(nn.Module):
    """Embedding [B, D] -> (mean [B, K], precision Cholesky factor [B, K, K]).

    Args:
        in_dim: embedding size.
        aspects: names of the K predicted MOS aspects (e.g. ``[mos]`` or ``[PQ, PC, CE, CU]``).
        hidden: MLP widths before the output layer (``[]``: linear).
        min_diag: floor of L's diagonal (caps the predicted std at ~1/min_diag).
        mean_init: initial bias of the mean (e.g. the MOS scale's middle, 3.0).
    """

    def __init__(self, in_dim: int, aspects: Sequence[str] = ("mos",),
                 hidden: Sequence[int] = (64,), min_diag: float = 1e-3, mean_init: float = 0.0):
        super().__init__()
        if not aspects:
            raise ValueError("need at least one aspect")
        self.aspects = [str(a) for a in aspects]
        self.k = len(self.aspects)
        self.min_diag = float(min_diag)
        self._config = {"in_dim": int(in_dim), "aspects": list(self.aspects),
                        "hidden": [int(h) for h in hidden], "min_diag": self.min_diag,
                        "mean_init": float(mean_init)}
        layers: list[nn.Module] = []
        prev = int(in_dim)
        for h in hidden:
            layers += [nn.Linear(prev, int(h)), nn.ReLU()]
            prev = int(h)
        self.trunk = nn.Sequential(*layers)
        self.n_tril = self.k * (self.k + 1) // 2
        self.out = nn.Linear(prev, self.k + self.n_tril)
        with torch.no_grad():
            self.out.bias[: self.k].fill_(float(mean_init))
        rows, cols = torch.tril_indices(self.k, self.k)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    def config(self) -> dict:
        return dict(self._config)

    def forward(self, embeddings: Tensor) -> tuple[Tensor, Tensor]:
        out = self.out(self.trunk(embeddings))
        mean, tril = out[:, : self.k], out[:, self.k:]
        diag = self._rows == self._cols
        tril = torch.where(diag, nn.functional.softplus(tril) + self.min_diag, tril)
        chol = embeddings.new_zeros(out.shape[0], self.k, self.k)
        chol[:, self._rows, self._cols] = tril
        return mean, chol

    def predict(self, embeddings: Tensor) -> dict[str, Tensor]:
        """{"mean" [B, K], "std" [B, K], "cov" [B, K, K]}."""
        mean, chol = self(embeddings)
        cov = covariance(chol)
        return {"mean": mean, "std": torch.diagonal(cov, dim1=-2, dim2=-1).sqrt(), "cov": cov}


class MultiGaussLoss(nn.Module):
    """Train a :class:`MultiGaussHead` on MOS columns of the manifest by Gaussian NLL.

    Use as the main ``loss`` (supervised fine-tuning) or an ``aux_losses`` entry beside RnC. The
    aspect columns must reach the batch: list them in ``data.extra_columns``. Items with a missing
    (null/NaN) aspect are left out of the term. Frame embeddings are time-averaged first.
    """

    def __init__(self, in_dim: int, aspects: Sequence[str] = ("mos",),
                 hidden: Sequence[int] = (64,), min_diag: float = 1e-3, mean_init: float = 0.0):
        super().__init__()
        self.head = MultiGaussHead(in_dim, aspects, hidden, min_diag, mean_init)
        self.aspects = self.head.aspects

    def targets(self, batch: dict[str, Any], device: torch.device) -> Tensor:
        cols = []
        for a in self.aspects:
            if a not in batch:
                raise KeyError(f"MOS aspect {a!r} not in the batch; add it to data.extra_columns")
            v = batch[a]
            v = v if torch.is_tensor(v) else torch.tensor(
                [math.nan if x is None else float(x) for x in v])
            cols.append(v.to(device=device, dtype=torch.float32))
        return torch.stack(cols, dim=-1)

    def terms(self, embeddings: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        """{"loss": mean NLL over labelled items, "mae": mean absolute error of the mean}."""
        from deepaq.adversarial import pool_embeddings

        pooled = pool_embeddings(embeddings)
        y = self.targets(batch, pooled.device)
        keep = torch.isfinite(y).all(-1)
        mean, chol = self.head(pooled)
        if not bool(keep.any()):
            zero = mean.sum() * 0.0
            return {"loss": zero, "mae": zero.detach()}
        nll = gaussian_nll(mean[keep], chol[keep], y[keep]).mean()
        mae = (mean[keep] - y[keep]).abs().mean().detach()
        return {"loss": nll, "mae": mae}

    def forward(self, embeddings: Tensor, batch: dict[str, Any]) -> Tensor:
        return self.terms(embeddings, batch)["loss"]

    def export(self, directory: str | os.PathLike) -> Path:
        """Save the head beside a checkpoint (called after ``save_checkpoint``)."""
        return save_head(self.head, directory)


# -- persistence and scoring ---------------------------------------------------------------------

def save_head(head: MultiGaussHead, directory: str | os.PathLike) -> Path:
    """Write ``mos_head.yaml`` (constructor args) and ``mos_head.safetensors`` into a folder."""
    import yaml
    from safetensors.torch import save_file

    from deepaq.records import atomic_write_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in head.state_dict().items()}
    tmp = directory / f".{HEAD_WEIGHTS}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, directory / HEAD_WEIGHTS)
    atomic_write_text(directory / HEAD_CONFIG,
                      yaml.safe_dump({"kind": "multigauss", **head.config()}, sort_keys=False))
    return directory


def load_head(directory: str | os.PathLike, device: str = "cpu") -> MultiGaussHead | None:
    """The checkpoint folder's MOS head in eval mode, or None when it has none."""
    import yaml
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / HEAD_CONFIG).is_file():
        return None
    cfg = yaml.safe_load((directory / HEAD_CONFIG).read_text(encoding="utf-8")) or {}
    kind = cfg.pop("kind", "multigauss")
    if kind != "multigauss":
        raise ValueError(f"{directory / HEAD_CONFIG}: unknown head kind {kind!r}")
    head = MultiGaussHead(**cfg)
    head.load_state_dict(load_file(str(directory / HEAD_WEIGHTS), device="cpu"), strict=True)
    return head.to(device).eval()


def predict_mos(head: MultiGaussHead, window_embeddings: Any) -> dict[str, float]:
    """Per-aspect predicted MOS and std for one file from its per-window embeddings [W, D]
    (or [W, F, D]): windows are averaged, then the head is applied.

    Returns ``{"mos_<aspect>": mean, "std_<aspect>": std}`` (one aspect named "mos": ``mos_mean``
    and ``mos_std``).
    """
    import numpy as np

    from deepaq.adversarial import pool_embeddings

    param = next(head.parameters())
    emb = torch.as_tensor(np.asarray(window_embeddings), dtype=param.dtype, device=param.device)
    with torch.inference_mode():
        pooled = pool_embeddings(emb).mean(0, keepdim=True)
        out = head.predict(pooled)
    mean, std = out["mean"][0].tolist(), out["std"][0].tolist()
    if head.aspects == ["mos"]:
        return {"mos_mean": mean[0], "mos_std": std[0]}
    res: dict[str, float] = {}
    for a, m, s in zip(head.aspects, mean, std):
        res[f"mos_{a}"], res[f"std_{a}"] = m, s
    return res
