"""Rank-N-Contrast (Zha et al., NeurIPS 2023) for learning embeddings ordered by quality labels.

For an anchor i and a positive j != i, the negatives are every k != i whose label is at least as
far from y_i as y_j is (``|y_i - y_k| >= |y_i - y_j|``, j itself included):

    l(i, j) = -log( exp(s_ij / t) / sum_{k in S(i, j)} exp(s_ik / t) ),   s_ik = -||f_i - f_k||_2

and the loss is the mean of l(i, j) over all allowed (i, j) pairs (= the paper's
``1/N sum_i 1/(N-1) sum_j`` when every pair is allowed, as in the authors' code). Computed for all
(i, j, k) at once with a [B, B, B] mask and ``logsumexp``: no Python loop, numerically stable.

``mask[i, k]`` restricts which items may interact (e.g. same excerpt), ``anchors[i]`` which items act
as anchors (e.g. only the clean references: a *reference-anchored* ranking of the degraded versions
by their distance to their own reference, which is what a full-reference metric uses).

``RnCLoss`` is DeePAQ's multi-label form: a ViSQOL term over the batch plus a bitrate term over the
coded items. Bitrate labels are compared in log2 (octaves: 16 -> 32 kbps matters as much as
64 -> 128); a clean item's infinite bitrate is replaced by one octave above the batch's highest
coded bitrate, so it never produces inf/NaN and, where clean items take part (reference anchors),
clean ranks above every coded item.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

WITHIN = ("batch", "excerpt")
ANCHORS = ("all", "reference")
CROSS_SCOPES = ("all", "outside_ladder", "across_families")


def pairwise_l2(features: Tensor) -> Tensor:
    """[B, D] -> [B, B] Euclidean distances with a zero (not NaN) gradient where they are 0."""
    sq = (features[:, None, :] - features[None, :, :]).pow(2).sum(-1)
    positive = sq > 0
    return torch.where(positive, torch.where(positive, sq, torch.ones_like(sq)).sqrt(),
                       torch.zeros_like(sq))


def rnc_loss_from_distances(distances: Tensor, labels: Tensor, temperature: float = 2.0,
                            mask: Tensor | None = None, anchors: Tensor | None = None) -> Tensor:
    """Rank-N-Contrast from a [B, B] matrix of embedding distances (see the module docstring).

    Use directly when the distance is not the L2 of pooled vectors (e.g. the frame-averaged
    distance of ``QualityModel(pooling="frame")``). Returns 0 (still attached to the graph) when no
    pair is allowed.
    """
    b = distances.shape[0]
    if distances.shape != (b, b) or labels.shape != (b,):
        raise ValueError(f"distances must be [B, B] and labels [B], got {tuple(distances.shape)}, "
                         f"{tuple(labels.shape)}")
    device = distances.device
    logits = -distances / temperature                                          # [i, k]
    labels = labels.to(device=device, dtype=distances.dtype)
    label_diff = (labels[:, None] - labels[None, :]).abs()                     # [i, k]
    eye = torch.eye(b, dtype=torch.bool, device=device)
    allowed = ~eye if mask is None else (mask.to(device=device, dtype=torch.bool) & ~eye)
    if anchors is not None:
        allowed = allowed & anchors.to(device=device, dtype=torch.bool)[:, None]
    # negatives of pair (i, j): allowed k with |y_i - y_k| >= |y_i - y_j|; k == j is always kept
    # so that every row's logsumexp is finite, also for pairs that are then left out
    negatives = allowed[:, None, :] & (label_diff[:, None, :] >= label_diff[:, :, None])
    negatives = negatives | torch.eye(b, dtype=torch.bool, device=device)[None, :, :]
    masked_logits = logits[:, None, :].expand(b, b, b).masked_fill(~negatives, float("-inf"))
    log_prob = logits - torch.logsumexp(masked_logits, dim=-1)                 # [i, j]
    count = allowed.sum()
    if count == 0:
        return distances.sum() * 0.0
    return -(log_prob * allowed.to(log_prob.dtype)).sum() / count


def rnc_loss(features: Tensor, labels: Tensor, temperature: float = 2.0,
             mask: Tensor | None = None, anchors: Tensor | None = None) -> Tensor:
    """Rank-N-Contrast on embeddings ``features`` [B, D] with scalar ``labels`` [B] (L1 label
    distance, L2 feature distance). ``mask`` [B, B] bool: pairs allowed to interact; ``anchors``
    [B] bool: items used as anchors (default all)."""
    if features.dim() != 2:
        raise ValueError(f"features must be [B, D], got {tuple(features.shape)}")
    return rnc_loss_from_distances(pairwise_l2(features), labels, temperature, mask, anchors)


def bitrate_to_label(bitrate_kbps: Tensor, log2: bool = True) -> Tensor:
    """Bitrates (inf = clean) -> finite ranking labels: log2(kbps); clean = batch max + 1 octave
    (linear scale: 2 x the batch max). All clean -> all equal labels."""
    bitrate = bitrate_kbps.to(torch.float64)
    finite = torch.isfinite(bitrate)
    if bool((bitrate[finite] <= 0).any()):
        raise ValueError("bitrates must be > 0 (use inf for clean)")
    values = torch.log2(torch.where(finite, bitrate, torch.ones_like(bitrate))) if log2 else bitrate
    top = values[finite].max() if bool(finite.any()) else values.new_tensor(0.0)
    clean = top + 1.0 if log2 else top * 2.0
    return torch.where(finite, values, clean).to(torch.float32)


class RnCLoss(nn.Module):
    """DeePAQ's multi-label RnC: ``visqol_weight * RnC(ViSQOL) + bitrate_weight * RnC(bitrate)``.

    Args:
        temperature: RnC temperature (paper: 2.0).
        visqol_weight, bitrate_weight: weights of the two terms (a 0 weight skips the term).
        within: "batch" (every pair interacts) or "excerpt" (only items of the same excerpt,
            given by ``groups``).
        anchor: "all" or "reference" (only clean items anchor: each degraded item is ranked by its
            distance to its own reference; needs ``within="excerpt"``). With "reference" clean items
            take part in the bitrate term too (as the highest bitrate).
        log_bitrate: compare bitrates in log2 (default) or linearly.
    """

    def __init__(self, temperature: float = 2.0, visqol_weight: float = 1.0,
                 bitrate_weight: float = 1.0, within: str = "batch", anchor: str = "all",
                 log_bitrate: bool = True):
        super().__init__()
        if within not in WITHIN:
            raise ValueError(f"within must be one of {WITHIN}, got {within!r}")
        if anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
        if anchor == "reference" and within != "excerpt":
            raise ValueError("anchor='reference' needs within='excerpt'")
        self.temperature, self.within, self.anchor = float(temperature), within, anchor
        self.visqol_weight, self.bitrate_weight = float(visqol_weight), float(bitrate_weight)
        self.log_bitrate = bool(log_bitrate)

    def terms(self, features: Tensor, visqol: Tensor, bitrate: Tensor, coded: Tensor | None = None,
              groups: Tensor | None = None, distances: Tensor | None = None) -> dict[str, Tensor]:
        """{"loss", "visqol", "bitrate"} for a batch.

        ``features`` [B, D] (or None with ``distances`` [B, B] given), ``visqol`` [B], ``bitrate`` [B]
        in kbps (inf for clean), ``coded`` [B] bool (default: finite bitrate), ``groups`` [B] int
        excerpt ids (needed for ``within="excerpt"``).
        """
        dist = pairwise_l2(features) if distances is None else distances
        b = dist.shape[0]
        device = dist.device
        bitrate = bitrate.to(device)
        coded = torch.isfinite(bitrate) if coded is None else coded.to(device=device, dtype=torch.bool)
        if self.within == "excerpt":
            if groups is None:
                raise ValueError("within='excerpt' needs groups (an excerpt id per item)")
            groups = groups.to(device)
            mask = groups[:, None] == groups[None, :]
        else:
            mask = torch.ones(b, b, dtype=torch.bool, device=device)
        anchors = ~coded if self.anchor == "reference" else None
        zero = dist.sum() * 0.0
        visqol_term = bitrate_term = zero
        if self.visqol_weight:
            visqol_term = rnc_loss_from_distances(dist, visqol.to(device), self.temperature, mask,
                                                  anchors)
        if self.bitrate_weight:
            labels = bitrate_to_label(bitrate, self.log_bitrate).to(device)
            if self.anchor == "reference":
                bitrate_term = rnc_loss_from_distances(dist, labels, self.temperature, mask, anchors)
            else:
                pair = mask & coded[:, None] & coded[None, :]
                bitrate_term = rnc_loss_from_distances(dist, labels, self.temperature, pair)
        loss = self.visqol_weight * visqol_term + self.bitrate_weight * bitrate_term
        return {"loss": loss, "visqol": visqol_term, "bitrate": bitrate_term}

    def forward(self, features: Tensor, visqol: Tensor, bitrate: Tensor,
                coded: Tensor | None = None, groups: Tensor | None = None,
                distances: Tensor | None = None) -> Tensor:
        return self.terms(features, visqol, bitrate, coded, groups, distances)["loss"]


def _ranked_pair_losses(d: Tensor, has_ref: Tensor, pairs: dict[str, Tensor], temperature: float,
                        zero: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """d divided by its mean over ``has_ref`` (scale-free), and for each bool [B, B] mask in
    ``pairs`` the mean of softplus((d_i - d_j) / temperature) over its pairs (``zero`` if none):
    entry (i, j) of a mask means item i must be closer to its reference than item j."""
    d = d / d[has_ref].mean().clamp(min=1e-8)
    pair_loss = torch.nn.functional.softplus((d[:, None] - d[None, :]) / temperature)
    return d, {name: pair_loss[sel].mean() if bool(sel.any()) else zero
               for name, sel in pairs.items()}


class ReferenceRankLoss(nn.Module):
    """Rank each coded item's distance *to its own reference* against its ViSQOL label, batch-wide.

    A full-reference metric is the distance d_i = D(ref(i), i); what users need is that d orders
    items as the label does, across excerpts too (pooled correlation), not only within one. For
    every pair of coded items with y_i > y_j + ``min_gap`` the loss is the logistic ranking loss
    softplus((d_i - d_j) / (t * mean(d))): dividing by the batch mean makes it scale-free, so the
    model cannot win by inflating distances. Pairs from the same excerpt can be weighted apart
    (``within_weight``). Needs each coded item's clean reference in the batch (the excerpt batch
    sampler with ``include_clean``). D is ``model.distance`` (frame-level when the model pools by
    frame), computed for the B item/reference pairs only, not all B^2.

    ``bitrate_weight`` adds DeePAQ's second weak label as a term of the same form: within one
    excerpt and one codec, the item coded at the higher bitrate (by more than a factor
    ``bitrate_ratio``) must be closer to the reference. It needs the ``codec`` column in the batch
    (``data.extra_columns: [codec]``). Why: ViSQOL's labels are not monotone in bitrate everywhere
    (on real recordings it rates Opus at 16 kbps above 32 kbps), while a codec engineer expects
    a metric to order one codec's bitrates.
    """

    def __init__(self, temperature: float = 0.1, min_gap: float = 0.02, within_weight: float = 1.0,
                 across_weight: float = 1.0, bitrate_weight: float = 0.0,
                 bitrate_ratio: float = 1.2):
        super().__init__()
        self.temperature, self.min_gap = float(temperature), float(min_gap)
        self.within_weight, self.across_weight = float(within_weight), float(across_weight)
        self.bitrate_weight, self.bitrate_ratio = float(bitrate_weight), float(bitrate_ratio)

    @staticmethod
    def reference_distances(features: Tensor, groups: Tensor, coded: Tensor,
                            model: nn.Module | None = None) -> tuple[Tensor, Tensor]:
        """(d [B], has_ref [B]): each item's distance to the first clean item of its excerpt."""
        ref = (groups[:, None] == groups[None, :]) & ~coded[None, :]           # [item, clean]
        has_ref = coded & ref.any(1)
        ref_idx = ref.to(torch.int8).argmax(1)
        other = features[ref_idx]
        if model is not None and hasattr(model, "distance"):
            d = model.distance(features, other)
        else:
            d = torch.linalg.vector_norm((features - other).flatten(1), dim=-1)
        return d, has_ref

    def terms(self, features: Tensor, visqol: Tensor, groups: Tensor, bitrate: Tensor,
              model: nn.Module | None = None, coded: Tensor | None = None,
              codec: list | None = None) -> dict[str, Tensor]:
        device = features.device
        groups, visqol, bitrate = groups.to(device), visqol.to(device), bitrate.to(device)
        coded = torch.isfinite(bitrate) if coded is None else coded.to(device).bool()
        if self.bitrate_weight > 0 and codec is None:
            raise ValueError("ReferenceRankLoss(bitrate_weight > 0) needs the 'codec' column: "
                             "set data.extra_columns: [codec] in the recipe")
        d, has_ref = self.reference_distances(features, groups, coded, model)
        zero = features.sum() * 0.0
        if int(has_ref.sum()) < 2:
            return {"loss": zero, "within": zero, "across": zero, "bitrate": zero}
        better = ((visqol[:, None] > visqol[None, :] + self.min_gap)
                  & has_ref[:, None] & has_ref[None, :])
        same = groups[:, None] == groups[None, :]
        pairs = {"within": better & same, "across": better & ~same}
        if codec is not None:
            ids = {name: i for i, name in enumerate(sorted({str(c) for c in codec}))}
            codec_id = torch.tensor([ids[str(c)] for c in codec], device=device)
            rate = torch.where(has_ref, bitrate, torch.zeros_like(bitrate))
            pairs["bitrate"] = ((rate[:, None] > rate[None, :] * self.bitrate_ratio) & same
                                & (codec_id[:, None] == codec_id[None, :])
                                & has_ref[:, None] & has_ref[None, :])
        _, out = _ranked_pair_losses(d, has_ref, pairs, self.temperature, zero)
        out["loss"] = self.within_weight * out["within"] + self.across_weight * out["across"]
        if self.bitrate_weight > 0:
            out["loss"] = out["loss"] + self.bitrate_weight * out["bitrate"]
        return out

    def forward(self, features: Tensor, visqol: Tensor, groups: Tensor, bitrate: Tensor,
                model: nn.Module | None = None, coded: Tensor | None = None,
                codec: list | None = None) -> Tensor:
        return self.terms(features, visqol, groups, bitrate, model, coded, codec)["loss"]


class JNDContrastiveLoss(nn.Module):
    """JND-pair contrastive loss (JSQA-style weak labels from ``deepaq-prep jnd``).

    Two versions of the same excerpt whose degradation ``level`` differs by at most ``jnd`` sound
    the same to a listener: their embeddings are pulled together (``d^2``). Pairs beyond the JND
    are pushed at least ``margin`` apart (``relu(margin - d)^2``); with ``scale_margin`` the margin
    grows with the gap in JNDs (``margin * min(gap / jnd, max_scale)``), so distance orders by level.
    Only pairs of the same excerpt (``groups``) and the same degradation with finite levels count
    (clean references have no level). ``level`` (and ``degradation``) reach the batch through
    ``data.extra_columns``.
    """

    def __init__(self, jnd: float = 2.0, margin: float = 1.0, scale_margin: bool = True,
                 max_scale: float = 4.0, level_column: str = "level",
                 degradation_column: str = "degradation"):
        super().__init__()
        if jnd <= 0 or margin <= 0:
            raise ValueError("jnd and margin must be > 0")
        self.jnd, self.margin, self.scale_margin = float(jnd), float(margin), bool(scale_margin)
        self.max_scale = float(max_scale)
        self.level_column, self.degradation_column = level_column, degradation_column

    def terms(self, batch: dict, groups: Tensor, features: Tensor | None = None,
              distances: Tensor | None = None) -> dict[str, Tensor]:
        dist = pairwise_l2(features) if distances is None else distances
        device = dist.device
        if self.level_column not in batch:
            raise KeyError(f"column {self.level_column!r} not in the batch; add it to "
                           "data.extra_columns")
        raw = batch[self.level_column]
        level = (raw if torch.is_tensor(raw) else torch.tensor(
            [float("nan") if v is None else float(v) for v in raw])).to(device, torch.float64)
        ok = torch.isfinite(level)
        pair = (groups.to(device)[:, None] == groups.to(device)[None, :]) & ok[:, None] & ok[None, :]
        kinds = batch.get(self.degradation_column)
        if kinds is not None and not torch.is_tensor(kinds):
            ids = {k: i for i, k in enumerate(sorted({str(k) for k in kinds}))}
            kind = torch.tensor([ids[str(k)] for k in kinds], device=device)
            pair &= kind[:, None] == kind[None, :]
        pair &= torch.triu(torch.ones_like(pair), diagonal=1)
        gap = (level[:, None] - level[None, :]).abs()
        within = pair & (gap <= self.jnd + 1e-9)
        beyond = pair & ~within
        zero = dist.sum() * 0.0
        margin = torch.full_like(dist, self.margin)
        if self.scale_margin:
            margin = self.margin * (gap / self.jnd).clamp(max=self.max_scale).to(dist.dtype)
        pull = dist[within].pow(2).mean() if bool(within.any()) else zero
        push = torch.relu(margin - dist)[beyond].pow(2).mean() if bool(beyond.any()) else zero
        return {"loss": pull + push, "pull": pull, "push": push}

    def forward(self, batch: dict, groups: Tensor, features: Tensor | None = None,
                distances: Tensor | None = None) -> Tensor:
        return self.terms(batch, groups, features, distances)["loss"]


def _column_values(batch: dict, column: str, size: int) -> list:
    """A batch column as a Python list (tensors and lists both), with a clear error if absent."""
    if column not in batch:
        raise KeyError(f"column {column!r} not in the batch; add it to data.extra_columns")
    values = batch[column]
    values = values.tolist() if torch.is_tensor(values) else list(values)
    if len(values) != size:
        raise ValueError(f"column {column!r} has {len(values)} values for {size} items")
    return values


def _as_float(values: list) -> Tensor:
    out = []
    for v in values:
        try:
            out.append(float("nan") if v is None or v == "" else float(v))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return torch.tensor(out, dtype=torch.float64)


class MultiLabelRankLoss(nn.Module):
    """DeePAQ's ViSQOL + bitrate terms generalised to many distortion families with weak labels.

    Each degraded item has a ``family`` (a distortion, a codec, or an invariance) and a ``level``
    (its control parameter). d_i is the item's distance to its own reference (the first clean
    item of its excerpt in the batch), divided by the batch mean (scale-free, as in
    :class:`ReferenceRankLoss`); every term is a mean of logistic ranking losses
    softplus((d_better - d_worse) / temperature) over the pairs it selects:

    - ``family``: same excerpt, same family, levels ordered by ``higher_is_better[family]``
      (levels differing by a factor > ``level_ratio`` when both are positive and the family is in
      ``ratio_families``, e.g. bitrates; else by more than 0): each family's ladder in order.
    - ``invariance``: same excerpt, an item of a family listed in ``invariances`` (gain, polarity,
      ...) against every degraded item of that excerpt: transparent changes rank below the
      mildest degradation; plus ``invariance_abs_weight`` x mean d of the invariance items
      (pulls them towards the reference itself).
    - ``cross``: all pairs (within and across excerpts) of degraded, non-invariance items whose
      ``cross_label`` column (higher is better: ViSQOL, or a consensus of baselines) differs by
      more than ``min_gap``: one scale across families. Skipped when the column is None or NaN.
      ``cross_scope`` limits the pairs: ``all``; ``outside_ladder`` leaves out the pairs of one
      excerpt's ladder (the family term orders those, and a teacher that disagrees with the
      control parameter, as ViSQOL does on Opus, would undo it); ``across_families`` keeps only
      pairs of different families (the label then only says how families compare).
    - ``anchor``: same excerpt, the mildest level of each family against the harshest level of
      every other family: a label-free way to put families on one scale.

    Families not in ``higher_is_better`` or ``invariances`` raise an error (a silent default
    would rank a ladder backwards). Reference items: ``coded`` False, or an empty family.
    """

    def __init__(self, higher_is_better: dict[str, bool], invariances: list[str] | None = None,
                 temperature: float = 0.05, family_weight: float = 1.0,
                 invariance_weight: float = 1.0, invariance_abs_weight: float = 0.0,
                 cross_label: str | None = None, cross_weight: float = 0.0,
                 min_gap: float = 0.02, anchor_weight: float = 0.0, level_ratio: float = 1.2,
                 ratio_families: list[str] | None = None, family_column: str = "family",
                 level_column: str = "level", cross_scope: str = "all"):
        super().__init__()
        if cross_scope not in CROSS_SCOPES:
            raise ValueError(f"cross_scope must be one of {CROSS_SCOPES}, got {cross_scope!r}")
        self.cross_scope = cross_scope
        self.higher_is_better = {str(k): bool(v) for k, v in dict(higher_is_better).items()}
        self.invariances = [str(f) for f in (invariances or [])]
        overlap = set(self.invariances) & set(self.higher_is_better)
        if overlap:
            raise ValueError(f"families {sorted(overlap)} are both ladders and invariances")
        self.temperature, self.min_gap = float(temperature), float(min_gap)
        self.family_weight, self.invariance_weight = float(family_weight), float(invariance_weight)
        self.invariance_abs_weight = float(invariance_abs_weight)
        self.cross_label, self.cross_weight = cross_label, float(cross_weight)
        self.anchor_weight, self.level_ratio = float(anchor_weight), float(level_ratio)
        self.ratio_families = set(ratio_families or [])
        self.family_column, self.level_column = family_column, level_column

    def _pair_masks(self, family: list[str], level: Tensor, groups: Tensor, has_ref: Tensor,
                    inv: Tensor, cross: Tensor | None) -> dict[str, Tensor]:
        """Bool [B, B] masks per term: entry (i, j) means item i must be closer than item j.
        ``inv``: the invariance items (with a reference in the batch)."""
        n = len(family)
        device = groups.device
        known = set(self.higher_is_better) | set(self.invariances)
        unknown = sorted({f for f, ok in zip(family, has_ref.tolist()) if ok and f not in known})
        if unknown:
            raise ValueError(f"families {unknown} have no direction: list them in "
                             "higher_is_better or invariances")
        ids = {name: i for i, name in enumerate(sorted(set(family)))}
        fam = torch.tensor([ids[f] for f in family], device=device)
        ladder = has_ref & ~inv
        sign = torch.tensor([1.0 if self.higher_is_better.get(f, True) else -1.0 for f in family],
                            dtype=torch.float64, device=device)
        level = level.to(device)
        same = (groups[:, None] == groups[None, :]) & ladder[:, None] & ladder[None, :]
        same_family = same & (fam[:, None] == fam[None, :])
        goodness = sign * level                                     # higher = better, per family
        ratio = torch.tensor([f in self.ratio_families for f in family], device=device)
        by_ratio = (ratio[:, None] & (level[:, None] > 0) & (level[None, :] > 0))
        hi, lo = torch.maximum(level[:, None], level[None, :]), torch.minimum(level[:, None],
                                                                             level[None, :])
        far = torch.where(by_ratio, hi > lo * self.level_ratio, hi > lo)
        masks = {"family": same_family & (goodness[:, None] > goodness[None, :]) & far}
        masks["invariance"] = ((groups[:, None] == groups[None, :]) & inv[:, None]
                               & ladder[None, :])
        if cross is not None:
            cross = cross.to(device)
            ok = ladder & torch.isfinite(cross)
            masks["cross"] = ok[:, None] & ok[None, :] & (cross[:, None] > cross[None, :]
                                                          + self.min_gap)
            if self.cross_scope == "outside_ladder":
                masks["cross"] &= ~same_family
            elif self.cross_scope == "across_families":
                masks["cross"] &= fam[:, None] != fam[None, :]
        # anchor: per excerpt and family, the mildest level beats the harshest of every other one
        g_fam = same_family | torch.eye(n, dtype=torch.bool, device=device) & ladder[:, None]
        score = torch.where(ladder, goodness, torch.zeros_like(goodness))
        big = torch.finfo(torch.float64).max
        top = torch.where(g_fam, score[None, :], torch.full_like(g_fam, -big, dtype=torch.float64))
        bottom = torch.where(g_fam, score[None, :], torch.full_like(g_fam, big, dtype=torch.float64))
        best = ladder & (score >= top.amax(1))
        worst = ladder & (score <= bottom.amin(1))
        masks["anchor"] = (same & (fam[:, None] != fam[None, :]) & best[:, None] & worst[None, :])
        return masks

    def terms(self, features: Tensor, groups: Tensor, batch: dict,
              model: nn.Module | None = None) -> dict[str, Tensor]:
        n = features.shape[0]
        device = features.device
        groups = groups.to(device)
        family = ["" if f is None else str(f) for f in _column_values(batch, self.family_column, n)]
        level = _as_float(_column_values(batch, self.level_column, n))
        if "coded" in batch:
            coded = torch.as_tensor(batch["coded"], dtype=torch.bool).to(device)
        else:
            coded = torch.tensor([f != "" for f in family], device=device)
        cross = None
        if self.cross_label and self.cross_weight > 0:
            cross = _as_float(_column_values(batch, self.cross_label, n))
        d, has_ref = ReferenceRankLoss.reference_distances(features, groups, coded, model)
        zero = features.sum() * 0.0
        names = ("family", "invariance", "invariance_abs", "cross", "anchor")
        out = dict.fromkeys(names, zero)
        if int(has_ref.sum()) < 1:
            out["loss"] = zero
            return out
        inv = torch.tensor([f in self.invariances for f in family], device=device) & has_ref
        masks = self._pair_masks(family, level, groups, has_ref, inv, cross)
        d, ranked = _ranked_pair_losses(d, has_ref, masks, self.temperature, zero)
        out.update(ranked)
        if bool(inv.any()):
            out["invariance_abs"] = d[inv].mean()
        out["loss"] = (self.family_weight * out["family"]
                       + self.invariance_weight * out["invariance"]
                       + self.invariance_abs_weight * out["invariance_abs"]
                       + self.cross_weight * out["cross"] + self.anchor_weight * out["anchor"])
        return out

    def forward(self, features: Tensor, groups: Tensor, batch: dict,
                model: nn.Module | None = None) -> Tensor:
        return self.terms(features, groups, batch, model)["loss"]
