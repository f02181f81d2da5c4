"""Rank-N-Contrast: the vectorised loss against a literal loop over the paper's formula."""

from __future__ import annotations

import math

import pytest
import torch

from deepaq.losses import RnCLoss, bitrate_to_label, pairwise_l2, rnc_loss


def loop_rnc(features, labels, temperature, mask=None, anchors=None) -> float:
    """Paper's formula, one (i, j, k) at a time; mean over the allowed (i, j) pairs."""
    f = features.double().tolist()
    y = labels.double().tolist()
    n = len(y)

    def s(i, k):
        return -math.sqrt(sum((a - b) ** 2 for a, b in zip(f[i], f[k])))

    def ok(i, k):
        return i != k and (mask is None or bool(mask[i, k])) and \
            (anchors is None or bool(anchors[i]))

    total, pairs = 0.0, 0
    for i in range(n):
        for j in range(n):
            if not ok(i, j):
                continue
            denom = 0.0
            for k in range(n):
                if ok(i, k) and abs(y[i] - y[k]) >= abs(y[i] - y[j]):
                    denom += math.exp(s(i, k) / temperature)
            total += -math.log(math.exp(s(i, j) / temperature) / denom)
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_implementation(seed):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(12, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (12,), generator=g).double()  # ties included on purpose
    for temperature in (0.5, 2.0):
        got = rnc_loss(feats, labels, temperature).item()
        assert got == pytest.approx(loop_rnc(feats, labels, temperature), abs=1e-5)


def test_mask_and_anchors_match_loop():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(10, 4, generator=g, dtype=torch.float64)
    labels = torch.rand(10, generator=g, dtype=torch.float64) * 4 + 1
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    mask = groups[:, None] == groups[None, :]
    anchors = torch.tensor([1, 0, 0, 1, 0, 0, 0, 1, 0, 0], dtype=torch.bool)
    assert rnc_loss(feats, labels, 2.0, mask).item() == pytest.approx(
        loop_rnc(feats, labels, 2.0, mask), abs=1e-5)
    assert rnc_loss(feats, labels, 2.0, mask, anchors).item() == pytest.approx(
        loop_rnc(feats, labels, 2.0, mask, anchors), abs=1e-5)
    # the mask really cuts interactions: moving another group's items does not change group 0's loss
    moved = feats.clone()
    moved[3:] += 10.0
    only0 = mask & (groups[:, None] == 0)
    assert rnc_loss(feats, labels, 2.0, only0).item() == pytest.approx(
        rnc_loss(moved, labels, 2.0, only0).item(), abs=1e-9)
    assert rnc_loss(feats, labels, 2.0).item() != pytest.approx(rnc_loss(moved, labels, 2.0).item())


def test_permutation_invariant_and_gradients_flow():
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(16, 8, generator=g, requires_grad=True)
    labels = torch.rand(16, generator=g)
    loss = rnc_loss(feats, labels)
    loss.backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0
    perm = torch.randperm(16, generator=g)
    assert rnc_loss(feats[perm], labels[perm]).item() == pytest.approx(loss.item(), rel=1e-6)


def test_ordered_embedding_scores_lower_than_shuffled():
    labels = torch.linspace(1.0, 5.0, 20)
    ordered = torch.stack([labels, torch.zeros(20)], dim=1) * 3.0
    shuffled = ordered[torch.randperm(20, generator=torch.Generator().manual_seed(0))]
    assert rnc_loss(ordered, labels).item() < rnc_loss(shuffled, labels).item()


def test_identical_features_give_finite_gradients():
    feats = torch.zeros(4, 3, requires_grad=True)
    loss = rnc_loss(feats, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()
    assert pairwise_l2(torch.eye(3)).diagonal().eq(0).all()


def test_multilabel_handles_clean_inf_bitrate():
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(8, 6, generator=g, requires_grad=True)
    visqol = torch.tensor([4.7, 4.5, 3.9, 2.8, 4.7, 4.4, 3.5, 2.5])
    bitrate = torch.tensor([math.inf, 128.0, 64.0, 16.0, math.inf, 96.0, 32.0, 16.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    labels = bitrate_to_label(bitrate)
    assert torch.isfinite(labels).all() and labels[0] > labels[1:4].max()
    for kwargs in ({}, {"within": "excerpt"}, {"within": "excerpt", "anchor": "reference"}):
        terms = RnCLoss(**kwargs).terms(feats, visqol, bitrate, groups=groups)
        assert all(torch.isfinite(v) for v in terms.values()), (kwargs, terms)
        terms["loss"].backward()
        assert torch.isfinite(feats.grad).all()
        feats.grad = None
    # the bitrate term only sees coded items (and pairs inside the batch): equal to a direct call
    coded = torch.isfinite(bitrate)
    expected = rnc_loss(feats[coded], torch.log2(bitrate[coded]))
    got = RnCLoss(visqol_weight=0.0).terms(feats, visqol, bitrate)["bitrate"]
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="groups"):
        RnCLoss(within="excerpt")(feats, visqol, bitrate)


def _reference_rank_oracle(d, y, groups, coded, t, min_gap):
    """The logistic ranking loss written out pair by pair (within and across excerpts)."""
    import math

    keep = [i for i in range(len(d)) if coded[i]]
    mean = sum(d[i] for i in keep) / len(keep)
    within, across = [], []
    for i in keep:
        for j in keep:
            if y[i] > y[j] + min_gap:
                v = math.log1p(math.exp((d[i] - d[j]) / mean / t))
                (within if groups[i] == groups[j] else across).append(v)
    return sum(within) / len(within) + sum(across) / len(across)


def test_reference_rank_loss_matches_pairwise_oracle_and_is_scale_free():
    from deepaq.losses import ReferenceRankLoss

    torch.manual_seed(1)
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    bitrate = torch.tensor([math.inf, 16, 64, 128, math.inf, 16, 32, 96, 128])
    visqol = torch.tensor([4.7, 2.1, 3.6, 4.5, 4.7, 2.4, 2.9, 4.2, 4.6])
    feats = torch.randn(9, 5, requires_grad=True)
    loss_fn = ReferenceRankLoss(temperature=0.2, min_gap=0.02)
    got = loss_fn(feats, visqol, groups, bitrate)
    d, _ = loss_fn.reference_distances(feats.detach(), groups, torch.isfinite(bitrate))
    want = _reference_rank_oracle(d.tolist(), visqol.tolist(), groups.tolist(),
                                  torch.isfinite(bitrate).tolist(), 0.2, 0.02)
    assert abs(float(got) - want) < 1e-5
    assert abs(float(loss_fn(feats * 7.0, visqol, groups, bitrate)) - float(got)) < 1e-5
    got.backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0
    # an embedding whose distances follow the labels scores lower than one that reverses them
    ref = torch.zeros(1, 5)
    good = torch.cat([ref, (5 - visqol[1:4, None]) * torch.ones(3, 5), ref,
                      (5 - visqol[5:, None]) * torch.ones(4, 5)])
    bad = torch.cat([ref, visqol[1:4, None] * torch.ones(3, 5), ref,
                     visqol[5:, None] * torch.ones(4, 5)])
    assert float(loss_fn(good, visqol, groups, bitrate)) < float(loss_fn(bad, visqol, groups, bitrate))


def test_reference_rank_bitrate_term_orders_one_codecs_bitrates():
    """The bitrate term pairs items of one excerpt and one codec only, and asks for the codec
    string when it is switched on."""
    from deepaq.losses import ReferenceRankLoss

    groups = torch.tensor([0, 0, 0, 0, 0])
    bitrate = torch.tensor([math.inf, 16, 32, 16, 32])
    codec = [None, "opus", "opus", "mp3", "mp3"]
    # ViSQOL says Opus 16 > Opus 32 (as it does on real recordings); bitrate says the reverse
    visqol = torch.tensor([4.7, 4.1, 3.9, 2.0, 2.5])
    loss_fn = ReferenceRankLoss(temperature=0.2, bitrate_weight=1.0)
    with pytest.raises(ValueError, match="extra_columns"):
        loss_fn(torch.zeros(5, 2), visqol, groups, bitrate)
    follows_bitrate = torch.tensor([[0.0], [2.0], [1.0], [4.0], [3.0]])   # d: opus32 < opus16
    follows_visqol = torch.tensor([[0.0], [1.0], [2.0], [4.0], [3.0]])    # d: opus16 < opus32
    a = loss_fn.terms(follows_bitrate, visqol, groups, bitrate, codec=codec)
    b = loss_fn.terms(follows_visqol, visqol, groups, bitrate, codec=codec)
    assert float(a["bitrate"]) < float(b["bitrate"])
    assert float(a["within"]) > float(b["within"])
    # pairs across codecs never enter the bitrate term: opus 32 vs mp3 16 is not compared
    mixed = ReferenceRankLoss(temperature=0.2, bitrate_weight=1.0)
    only_cross = mixed.terms(follows_bitrate, visqol, groups, bitrate, codec=[None, "a", "b", "c", "d"])
    assert float(only_cross["bitrate"]) == 0.0
    # the weight scales the term into the total
    off = ReferenceRankLoss(temperature=0.2).terms(follows_visqol, visqol, groups, bitrate,
                                                   codec=codec)
    assert float(b["loss"]) == pytest.approx(float(off["loss"]) + float(b["bitrate"]), rel=1e-6)


# -- MultiLabelRankLoss: each term against a direct loop over the pairs it names ---------------

def _multilabel_batch(seed: int):
    """Two excerpts: clean + a 3-level noise ladder (SNR, higher better) + a 3-level clipping
    ladder (dB, higher worse) + two gain invariance items; random features, ViSQOL-like labels."""
    g = torch.Generator().manual_seed(seed)
    family, level = [], []
    for _ in range(2):
        family += ["", "noise", "noise", "noise", "clip", "clip", "clip", "gain", "gain"]
        level += [math.nan, 30.0, 20.0, 10.0, 3.0, 10.0, 20.0, -6.0, 6.0]
    groups = torch.tensor([0] * 9 + [1] * 9)
    coded = torch.tensor([f != "" for f in family])
    features = torch.randn(18, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    visqol = torch.rand(18, generator=g, dtype=torch.float64) * 4 + 1
    visqol[3] = float("nan")                                     # an unlabelled item
    batch = {"family": family, "level": level, "coded": coded, "visqol": visqol.tolist()}
    return features, groups, batch


def _loop_multilabel(d, groups, batch, t, up, inv, min_gap, cross_scope="all"):
    """Every term as a literal double loop (d: each item's distance to its own reference)."""
    fam, lev, vis = batch["family"], batch["level"], batch["visqol"]
    g = groups.tolist()
    n = len(fam)
    deg = [i for i in range(n) if fam[i]]
    mean = sum(d[i] for i in deg) / len(deg)
    dn = [x / mean for x in d]

    def sp(x):
        return math.log1p(math.exp(x))

    def good(i):
        return lev[i] if up[fam[i]] else -lev[i]

    ladder = [i for i in deg if fam[i] not in inv]
    terms = {k: [] for k in ("family", "invariance", "cross", "anchor")}
    for i in ladder:
        for j in ladder:
            pair = sp((dn[i] - dn[j]) / t)
            if g[i] == g[j] and fam[i] == fam[j] and good(i) > good(j):
                terms["family"].append(pair)
            in_scope = {"all": True,
                        "outside_ladder": not (g[i] == g[j] and fam[i] == fam[j]),
                        "across_families": fam[i] != fam[j]}[cross_scope]
            if vis[i] > vis[j] + min_gap and in_scope:       # NaN compares False
                terms["cross"].append(pair)
            same_fam = [k for k in ladder if g[k] == g[i] and fam[k] == fam[i]]
            other = [k for k in ladder if g[k] == g[j] and fam[k] == fam[j]]
            if (g[i] == g[j] and fam[i] != fam[j] and good(i) == max(good(k) for k in same_fam)
                    and good(j) == min(good(k) for k in other)):
                terms["anchor"].append(pair)
    for i in deg:
        if fam[i] in inv:
            for j in ladder:
                if g[i] == g[j]:
                    terms["invariance"].append(sp((dn[i] - dn[j]) / t))
    out = {k: sum(v) / len(v) for k, v in terms.items()}
    out["invariance_abs"] = sum(dn[i] for i in deg if fam[i] in inv) / sum(
        1 for i in deg if fam[i] in inv)
    return out


@pytest.mark.parametrize(("seed", "cross_scope"), [(0, "all"), (1, "all"),
                                                   (0, "outside_ladder"), (1, "across_families")])
def test_multilabel_rank_loss_terms_match_a_direct_loop(seed, cross_scope):
    from deepaq.losses import MultiLabelRankLoss

    features, groups, batch = _multilabel_batch(seed)
    up = {"noise": True, "clip": False}
    loss = MultiLabelRankLoss(up, invariances=["gain"], temperature=0.3, family_weight=1.0,
                              invariance_weight=2.0, invariance_abs_weight=0.5,
                              cross_label="visqol", cross_weight=0.7, min_gap=0.1,
                              anchor_weight=1.5, cross_scope=cross_scope)
    out = loss.terms(features, groups, batch)
    refs = [0] * 9 + [9] * 9
    d = [math.sqrt(sum((a - b) ** 2 for a, b in zip(features[i].tolist(),
                                                    features[refs[i]].tolist())))
         for i in range(18)]
    want = _loop_multilabel(d, groups, batch, 0.3, up, ["gain"], 0.1, cross_scope)
    for name, value in want.items():
        assert out[name].item() == pytest.approx(value, rel=1e-9), name
    total = (want["family"] + 2.0 * want["invariance"] + 0.5 * want["invariance_abs"]
             + 0.7 * want["cross"] + 1.5 * want["anchor"])
    assert out["loss"].item() == pytest.approx(total, rel=1e-9)
    out["loss"].backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0


def test_multilabel_rank_loss_ladders_point_the_registry_way_and_reject_unknown_families():
    from deepaq.losses import MultiLabelRankLoss

    # distances that follow each ladder (noise: lower SNR farther; clip: more dB farther)
    family = ["", "noise", "noise", "clip", "clip"]
    level = [math.nan, 30.0, 10.0, 3.0, 20.0]
    right = torch.tensor([[0.0], [1.0], [3.0], [1.0], [3.0]])
    wrong = torch.tensor([[0.0], [3.0], [1.0], [3.0], [1.0]])
    groups = torch.zeros(5, dtype=torch.long)
    batch = {"family": family, "level": level}
    loss = MultiLabelRankLoss({"noise": True, "clip": False}, temperature=0.1)
    assert loss(right, groups, batch) < loss(wrong, groups, batch)
    with pytest.raises(ValueError, match="no direction"):
        MultiLabelRankLoss({"noise": True})(right, groups, batch)
    with pytest.raises(ValueError, match="cross_scope"):
        MultiLabelRankLoss({"noise": True}, cross_scope="ladders")
