"""Domain-adversarial training: gradient reversal, domain-label strategies, and a planted nuisance
that DAT must remove (linear-probe domain accuracy falls, test correlation rises)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from deepaq.adversarial import (
    DomainAdversarialLoss,
    GradientReversal,
    dann_lambda,
    grad_reverse,
    kmeans_labels,
    linear_probe,
    random_labels,
    source_labels,
)


def test_gradient_reversal_flips_sign_and_scales():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    (grad_reverse(x, 0.7) * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.7 * w)
    y = torch.randn(5, requires_grad=True)
    out = grad_reverse(y, 2.0)
    torch.testing.assert_close(out, y)  # identity forward
    out.pow(2).sum().backward()
    torch.testing.assert_close(y.grad, -2.0 * 2 * y.detach())

    layer = GradientReversal(lambda_max=0.5, schedule="dann")
    assert layer.lambd == 0.0
    layer.set_progress(1.0)
    assert layer.lambd == pytest.approx(0.5 * dann_lambda(1.0)) and dann_lambda(1.0) > 0.99
    assert 0 < dann_lambda(0.1) < dann_lambda(0.3) < 1


def test_domain_label_strategies():
    rows = [{"key": f"k{i}", "codec": c} for i, c in enumerate(["opus", "mp3", None, "opus"])]
    labels, vocab = source_labels(rows, "codec")
    assert vocab == ["mp3", "null", "opus"] and labels == {"k0": 2, "k1": 0, "k2": 1, "k3": 2}
    with pytest.raises(KeyError):
        source_labels(rows, "dataset")
    keys = [f"k{i}" for i in range(200)]
    r = random_labels(keys, 4, seed=1)
    assert r == random_labels(keys, 4, seed=1) and set(r.values()) == {0, 1, 2, 3}
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (3, 5))
    feats = np.concatenate([c + rng.normal(0, 0.1, (20, 5)) for c in centres])
    km = kmeans_labels(keys[:60], feats, k=3)
    groups = [{km[keys[i]] for i in range(g * 20, g * 20 + 20)} for g in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3

    loss = DomainAdversarialLoss(in_dim=5, strategy="source", column="codec", num_domains=3)
    loss.assign_labels(rows)
    emb = torch.randn(4, 5, requires_grad=True)
    terms = loss.terms(emb, {"key": ["k0", "k1", "unknown", "k3"]}, progress=1.0)
    assert torch.isfinite(terms["loss"]) and 0 <= float(terms["accuracy"]) <= 1
    terms["loss"].backward()
    assert emb.grad[2].abs().sum() == 0 and emb.grad[0].abs().sum() > 0


def _domain_data(n: int, label_bias: float, rng: np.random.Generator):
    """Quality q in the first 2 features (noisy), a per-domain DC offset in the next 2 (the
    nuisance), 4 distractors. Training labels carry a per-domain bias (domain 1 rated
    ``label_bias`` higher, as when two listening tests are pooled), test labels do not."""
    q = rng.uniform(0, 1, n)
    d = rng.integers(0, 2, n)
    x = np.concatenate([q[:, None] + rng.normal(0, 0.25, (n, 2)),
                        d[:, None] + rng.normal(0, 0.2, (n, 2)),
                        rng.normal(0, 1, (n, 4))], 1)
    return (torch.tensor(x, dtype=torch.float32),
            torch.tensor(q + label_bias * d, dtype=torch.float32), torch.tensor(d))


def _train(seed: int, dat: bool) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    x, y, d = _domain_data(1000, 0.4, rng)
    x_test, y_test, d_test = _domain_data(500, 0.0, rng)
    torch.manual_seed(seed)
    encoder = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    head = torch.nn.Linear(4, 1)
    adv = DomainAdversarialLoss(in_dim=4, strategy="random", num_domains=2, lambda_max=3.0,
                                schedule="dann")
    params = [*encoder.parameters(), *head.parameters(), *adv.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3, betas=(0.5, 0.9))
    steps = 500
    for step in range(steps):
        idx = torch.randint(0, len(x), (128,))
        emb = encoder(x[idx])
        loss = torch.nn.functional.mse_loss(head(emb)[:, 0], y[idx])
        if dat:
            loss = loss + adv(emb, domains=d[idx], progress=step / steps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        emb = encoder(x_test)
        r = pearsonr(head(emb)[:, 0].numpy(), y_test.numpy()).statistic
    return float(r), linear_probe(emb.numpy(), d_test.numpy())["accuracy"]


def test_dat_removes_planted_nuisance_and_improves_test_correlation():
    torch.set_num_threads(1)
    base = np.array([_train(s, dat=False) for s in range(3)])
    dat = np.array([_train(s, dat=True) for s in range(3)])
    # without DAT the embedding carries the domain (the offset predicts the training bias)
    assert base[:, 1].mean() > 0.85, base
    # DAT: the domain is much harder to read from the embedding ...
    assert dat[:, 1].mean() < base[:, 1].mean() - 0.1, (base, dat)
    # ... and the predictions generalise to labels without the domain bias
    assert dat[:, 0].mean() > base[:, 0].mean() + 0.05, (base, dat)
