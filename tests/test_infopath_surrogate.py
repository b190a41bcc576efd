"""The information-path detector's differentiable surrogate (advflow.information.soft_mi,
InfoPathDetector.differentiable_score, surrogate_agreement): soft-histogram MI tends to the bucketized MI as its
bandwidth shrinks, the surrogate ranks inputs as the real score does, its gradient reaches the input, and descending
it lowers the REAL score, where random steps of the same size do not."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advflow.data import to_model_space
from advflow.defenses.infopath import InfoPathDetector, surrogate_agreement
from advflow.information.mi import mi_against, seeded_permutations
from advflow.information.soft_mi import soft_mi_against
from conftest import blobs

B = 8


def structured(rng: np.random.Generator, n: int, c: int, size: int, block: int = 1) -> torch.Tensor:
    """``(n, c, size, size)`` float64 maps whose values sit well inside the buckets of their own range: bucket
    coordinates ``id + U(0.1, 0.9)``, the map's minimum and maximum exactly 0 and B, then a random affine map. With
    ``block`` > 1 each value fills a block x block square, so max-pooling by up to ``block`` keeps the same values,
    range and bucket coordinates."""
    side = size // block
    u = rng.integers(0, B, (n, c, side * side)) + rng.uniform(0.1, 0.9, (n, c, side * side))
    u[:, :, 0], u[:, :, 1] = 0.0, B
    maps = torch.as_tensor(u).view(n, c, side, side)
    maps = maps * torch.as_tensor(rng.uniform(0.2, 3.0, (n, c, 1, 1))) + torch.as_tensor(rng.normal(size=(n, c, 1, 1)))
    return maps.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)


def test_soft_mi_tends_to_the_bucketized_mi_as_the_bandwidth_shrinks():
    rng = np.random.default_rng(0)
    layers = [structured(rng, 4, 6, 12, block=2), structured(rng, 4, 5, 6), structured(rng, 4, 3, 3)]
    # an IIP-like reference (pooled to each layer's size) and an OIP-like one (the larger layer pooled to its size)
    for reference in (structured(rng, 4, 2, 12, block=4), structured(rng, 4, 4, 6, block=2)):
        hard = mi_against([m.float() for m in layers], reference.float(), B)
        assert max(float(h.max()) for h in hard) > 0.3  # the pairs are not all independent
        errors = {}
        for bandwidth in (0.5, 0.1, 0.01):
            soft = soft_mi_against(layers, reference, B, bandwidth=bandwidth)
            assert [s.shape for s in soft] == [h.shape for h in hard]
            errors[bandwidth] = max(float((s - h.double()).abs().max()) for s, h in zip(soft, hard))
        assert errors[0.5] > errors[0.1] > errors[0.01], errors
        assert errors[0.5] > 0.05 and errors[0.01] < 1e-5, errors  # the limit (float32 rounding of mi_against)
    shuffle = lambda k, p: seeded_permutations(9, range(4), k, p)  # noqa: E731  (the estimator's bias, likewise)
    hard = mi_against([m.float() for m in layers], reference.float(), B, permutation=shuffle)
    soft = soft_mi_against(layers, reference, B, bandwidth=0.01, permutation=shuffle)
    assert max(float((s - h.double()).abs().max()) for s, h in zip(soft, hard)) < 1e-5

    # differentiable; chunked under activation checkpointing, the same values and gradients
    maps = [m.clone().requires_grad_(True) for m in layers]
    whole = soft_mi_against(maps, reference, B)
    whole_grads = torch.autograd.grad(sum(s.sum() for s in whole), maps)
    chunked = soft_mi_against(maps, reference, B, max_elements=3000)
    chunked_grads = torch.autograd.grad(sum(s.sum() for s in chunked), maps)
    for a, b, g, h in zip(whole, chunked, whole_grads, chunked_grads):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(g, h)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    constant = torch.zeros(2, 3, 6, 6, requires_grad=True)  # a constant map is one bucket: MI 0, as mi_against says
    (mi,) = soft_mi_against([constant], structured(rng, 2, 2, 6), B)
    assert float(mi.detach().abs().max()) < 1e-6


def images(n: int, seed: int) -> torch.Tensor:
    return torch.as_tensor(to_model_space(blobs(n, seed)[0].astype(np.float32)))


@pytest.fixture(scope="module")
def detector(model) -> InfoPathDetector:
    return InfoPathDetector(model).fit(images(200, seed=3))


@pytest.fixture(scope="module")
def mixed() -> torch.Tensor:
    """24 clean images and 48 with random ±ε noise at four ε, so that the real scores spread from clean to capped."""
    x = images(72, seed=4)
    generator = torch.Generator().manual_seed(5)
    parts = [x[:24]]
    for i, epsilon in enumerate((0.05, 0.1, 0.2, 0.4)):
        batch = x[24 + 12 * i:36 + 12 * i]
        noise = torch.sign(torch.rand(batch.shape, generator=generator) - 0.5)
        parts.append((batch + epsilon * noise).clamp(-1, 1))
    return torch.cat(parts)


def test_the_surrogate_tracks_the_real_score(detector, mixed):
    agreement = surrogate_agreement(detector, mixed, batch_size=32)
    real = detector.score(mixed)
    assert agreement["n"] == len(mixed) and np.ptp(real) > 3  # the real scores spread
    # measured: Spearman 0.97, Pearson 0.90 (the real score is capped at log(R + 1) for the noisiest inputs)
    assert agreement["spearman"] > 0.85 and agreement["pearson"] > 0.7, agreement
    assert 0 < agreement["real_tied_at_max"] < 1
    assert "bandwidth 0.25" in detector.adaptive_surrogate and "BPDA" in detector.adaptive_surrogate
    # at a vanishing bandwidth the soft values are the real ones (the same layers, columns and means), for inputs off
    # the 8-bit pixel grid: a pixel exactly on a bucket edge, which 8-bit images often have, is split in two by soft
    # bins at any bandwidth
    sharp = InfoPathDetector(detector.classifier, surrogate_bandwidth=0.005)
    sharp.load_state_dict(detector.state_dict())
    assert "bandwidth 0.005" in sharp.adaptive_surrogate
    informative = detector.informative
    x = (mixed[:24] + 0.002 * torch.rand(mixed[:24].shape, generator=torch.Generator().manual_seed(7)) - 0.001)
    with torch.no_grad():
        soft = sharp.soft_values(x).double().numpy()[:, informative]
    hard = detector.layer_values(x)[:, informative]
    spread = detector.combiner.reference[:, informative].std(axis=0)
    assert np.abs(soft - hard).max(axis=0).max() < 0.05 * spread.min()


def test_the_gradient_reaches_the_input(detector, mixed):
    x = mixed[::6].clone().requires_grad_(True)
    score = detector.differentiable_score(x)
    assert score.shape == (len(x),) and score.dtype == x.dtype
    score.sum().backward()
    assert torch.isfinite(x.grad).all() and float((x.grad != 0).float().mean()) > 0.5
    with torch.no_grad():
        again = detector.differentiable_score(x)
    torch.testing.assert_close(again, score.detach())


def test_descending_the_surrogate_lowers_the_real_score(detector, mixed):
    start = mixed[np.argsort(detector.score(mixed))[-16:]]  # the 16 most suspicious inputs
    before = detector.score(start)
    assert before.mean() > 4.0

    def descend(direction) -> torch.Tensor:
        x = start.clone()
        for _ in range(20):
            x = x - 0.01 * direction(x)
            x = torch.min(torch.max(x, start - 0.3), start + 0.3).clamp(-1, 1)
        return x

    def surrogate_sign(x: torch.Tensor) -> torch.Tensor:
        x = x.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(detector.differentiable_score(x).sum(), x)
        return gradient.sign()

    generator = torch.Generator().manual_seed(6)
    attacked = detector.score(descend(surrogate_sign))
    randomly = detector.score(descend(lambda x: torch.sign(torch.rand(x.shape, generator=generator) - 0.5)))
    # measured: 5.3 at the start, 0.8 after descending, 4.7 after random steps
    assert attacked.mean() < before.mean() - 2.0, (before.mean(), attacked.mean())
    assert attacked.mean() < randomly.mean() - 1.5, (attacked.mean(), randomly.mean())
    assert math.isfinite(float(attacked.mean()))


def test_the_adaptive_attack_lowers_the_information_path_score_against_the_plain_attack(model, detector):
    """PGD at ε = 0.3 (pixel units) on the undefended classifier, and the same PGD with the information-path detector
    as a guard (its BPDA surrogate in the loss): the real score of the adversarial inputs falls and more pass
    unflagged."""
    from advflow.defenses.adaptive import DefendedSystem, guard, pgd

    images, labels = blobs(16, seed=5)
    x, y = torch.as_tensor(to_model_space(images.astype(np.float32))), torch.as_tensor(labels)
    validation = torch.as_tensor(to_model_space(blobs(64, seed=7)[0].astype(np.float32)))
    plain = pgd(DefendedSystem(model), x, y, epsilon=0.3, steps=40, rel_stepsize=0.03, seed=0)
    guarded = guard(detector, validation, 0.1)
    adaptive = pgd(DefendedSystem(model, guards={"infopath": guarded}), x, y, epsilon=0.3, steps=40,
                   rel_stepsize=0.03, seed=0)
    before, after = detector.score(plain.adversarial), adaptive.outcome.scores["infopath"]
    clean = detector.score(x).mean()
    assert before.mean() > clean
    assert after.mean() < before.mean() - 0.5 * (before.mean() - clean)
    assert (after <= guarded.threshold).sum() > (before <= guarded.threshold).sum()
