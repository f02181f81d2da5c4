"""MultiGauss MOS head: exact Gaussian NLL, positive-definite precision, persistence, uncertainty."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepaq.heads import (
    MultiGaussHead,
    MultiGaussLoss,
    covariance,
    gaussian_nll,
    load_head,
    predict_mos,
    save_head,
)


def test_nll_matches_scipy_multivariate_normal():
    from scipy.stats import multivariate_normal

    torch.manual_seed(0)
    head = MultiGaussHead(in_dim=6, aspects=["PQ", "PC", "CE", "CU"], hidden=[16])
    with torch.no_grad():
        mean, chol = head(torch.randn(5, 6))
    y = mean + torch.randn(5, 4)
    nll = gaussian_nll(mean.double(), chol.double(), y.double()).numpy()
    for b in range(5):
        prec = (chol[b].double() @ chol[b].double().T).numpy()
        assert np.all(np.linalg.eigvalsh(prec) > 0), "precision must be positive definite"
        ref = -multivariate_normal(mean[b].double().numpy(), np.linalg.inv(prec)).logpdf(
            y[b].double().numpy())
        assert nll[b] == pytest.approx(ref, rel=1e-9, abs=1e-9)
    cov = covariance(chol.double())
    np.testing.assert_allclose(cov[0].numpy(), np.linalg.inv((chol[0].double() @ chol[0].double().T).numpy()),
                               rtol=1e-8, atol=1e-10)


def test_loss_skips_missing_labels_and_head_round_trips(tmp_path):
    torch.manual_seed(1)
    loss = MultiGaussLoss(in_dim=4, aspects=["PQ", "CE"], hidden=[8], mean_init=3.0)
    emb = torch.randn(3, 4, requires_grad=True)
    batch = {"PQ": torch.tensor([3.0, float("nan"), 4.0]), "CE": [2.5, 3.0, None]}
    terms = loss.terms(emb, batch)
    assert torch.isfinite(terms["loss"])
    mean, chol = loss.head(emb[:1])
    only_first = gaussian_nll(mean, chol, torch.tensor([[3.0, 2.5]])).mean()
    assert terms["loss"].item() == pytest.approx(only_first.item(), rel=1e-6)
    terms["loss"].backward()
    assert emb.grad is not None and emb.grad[0].abs().sum() > 0 and emb.grad[1:].abs().sum() == 0
    with pytest.raises(KeyError, match="extra_columns"):
        loss.terms(emb, {"PQ": batch["PQ"]})

    save_head(loss.head, tmp_path)
    again = load_head(tmp_path)
    windows = torch.randn(3, 4).numpy()
    a, b = predict_mos(loss.head.eval(), windows), predict_mos(again, windows)
    assert set(a) == {"mos_PQ", "std_PQ", "mos_CE", "std_CE"} and a == b
    assert all(v > 0 for k, v in a.items() if k.startswith("std_"))
    assert load_head(tmp_path / "nothing") is None


def test_uncertainty_is_larger_out_of_distribution():
    """Two correlated aspects whose rating noise grows towards the edges of the training range:
    the head learns the noise (and the aspects' correlation) and reports more uncertainty on inputs
    beyond what it was trained on than on training-like inputs."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 1000
    x = rng.uniform(-1, 1, (n, 3))
    quality = 3.0 + 1.2 * x[:, 0]
    noise_sd = 0.1 + 0.6 * np.abs(x[:, 0])
    shared = rng.normal(size=n)
    y = np.stack([quality + noise_sd * shared,
                  quality - 0.5 + noise_sd * (0.6 * shared + 0.8 * rng.normal(size=n))], 1)
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    loss = MultiGaussLoss(in_dim=3, aspects=["PQ", "CE"], hidden=[32], mean_init=3.0)
    opt = torch.optim.Adam(loss.parameters(), lr=1e-2)
    for _ in range(300):
        idx = torch.randint(0, n, (256,))
        value = loss(xt[idx], {"PQ": yt[idx, 0], "CE": yt[idx, 1]})
        opt.zero_grad()
        value.backward()
        opt.step()
    loss.eval()
    with torch.no_grad():
        train_like = loss.head.predict(torch.tensor(rng.uniform(-0.3, 0.3, (200, 3)),
                                                    dtype=torch.float32))
        ood = loss.head.predict(torch.tensor(np.c_[rng.uniform(2.0, 3.0, (200, 1)),
                                                   rng.uniform(-1, 1, (200, 2))],
                                             dtype=torch.float32))
    std_in, std_ood = train_like["std"].mean(0), ood["std"].mean(0)
    assert torch.all(std_ood > 2.0 * std_in), (std_in, std_ood)
    # the learned mean tracks quality and the aspects' correlation is positive (0.6 planted)
    cov = train_like["cov"].mean(0)
    assert float(cov[0, 1] / (cov[0, 0] * cov[1, 1]).sqrt()) > 0.3
    grid = torch.tensor([[-0.5, 0, 0], [0.5, 0, 0]], dtype=torch.float32)
    with torch.no_grad():
        m = loss.head.predict(grid)["mean"]
    assert float(m[1, 0] - m[0, 0]) == pytest.approx(1.2, abs=0.3)
