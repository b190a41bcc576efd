"""JSMA (Papernot et al. 2016) and its adaptive variant (Carlini & Wagner 2016): the box, the L0 budget,
success flags, the least-perturbation target, trajectories, distillation's vanishing gradients and
batching."""

from __future__ import annotations

import copy
import importlib
import math

import pytest
import torch
from torch import nn

from advflow.attacks.jsma import jsma, jsma_least_perturbation
from conftest import BLOB_CLASSES, BLOB_SIZE

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_CLASSES, SIZE = BLOB_CLASSES, BLOB_SIZE
F = SIZE * SIZE


class Scaled(nn.Module):
    """A 'distilled-like' model: the same network's logits times ``factor``, so softmax at T = 1
    saturates to exactly one-hot in float32, as on a model distilled at T = ``factor``."""

    def __init__(self, base: nn.Module, factor: float) -> None:
        super().__init__()
        self.base, self.factor = base, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) * self.factor


def test_adversarial_inputs_stay_in_the_box(model, seeds):
    x, y = seeds
    for theta in (1.5, -1.5):  # large steps, so that clipping happens
        result = jsma(model, x, (y + 1) % NUM_CLASSES, theta=theta, gamma=0.3)
        adv = result.adversarial
        assert adv.min() >= -1.0 and adv.max() <= 1.0
        bound = 1.0 if theta > 0 else -1.0
        assert ((adv == bound) & (x != bound)).any(), "the test should exercise clipping"


def test_at_most_ceil_gamma_f_features_change(model, seeds):
    x, y = seeds
    for gamma in (0.05, 0.1, 0.25):
        result = jsma(model, x, (y + 2) % NUM_CLASSES, theta=0.5, gamma=gamma)
        l0 = (result.adversarial != x).flatten(1).sum(1)
        assert torch.equal(result.l0, l0)
        assert int(l0.max()) <= math.ceil(gamma * F)
        assert int(result.iterations.max()) <= math.floor(gamma * F / 2)
        assert int(l0.max()) > 0


def test_success_flags_agree_with_the_models_predictions(model, seeds):
    x, y = seeds
    target = (y + 1) % NUM_CLASSES
    result = jsma(model, x, target, theta=1.0, gamma=0.2)
    with torch.no_grad():
        predicted = model(result.adversarial).argmax(1)
    assert torch.equal(result.prediction, predicted)
    assert torch.equal(result.success, predicted == target)
    assert result.success.any() and not result.success.all(), "the test should see both outcomes"
    # A seed already classified as its target is returned unchanged after zero iterations.
    same = jsma(model, x[:2], y[:2], theta=1.0, gamma=0.2)
    assert same.success.all() and torch.equal(same.adversarial, x[:2]) and same.iterations.sum() == 0


def test_least_perturbation_picks_the_successful_target_with_the_smallest_l0(model, seeds):
    x, y = seeds
    x, y = x[:8], y[:8]
    # theta = 2 is Papernot et al.'s theta = +1 in [0, 1]: a picked pixel jumps to the bound.
    kwargs = dict(theta=2.0, gamma=0.2)
    chosen = jsma_least_perturbation(model, x, y, num_classes=NUM_CLASSES, **kwargs)
    per_target = [jsma(model, x, torch.full_like(y, c), **kwargs) for c in range(NUM_CLASSES)]
    assert (chosen.target != y).all()
    choices_mattered = False
    for i in range(len(x)):
        others = [c for c in range(NUM_CLASSES) if c != int(y[i])]
        ok = [c for c in others if per_target[c].success[i]]
        t = int(chosen.target[i])
        assert torch.equal(chosen.adversarial[i], per_target[t].adversarial[i])
        if ok:
            choices_mattered |= len({int(per_target[c].l0[i]) for c in ok}) > 1
            assert chosen.success[i]
            assert int(chosen.l0[i]) == min(int(per_target[c].l0[i]) for c in ok)
        else:
            assert not chosen.success[i]
            assert int(chosen.l0[i]) == min(int(per_target[c].l0[i]) for c in others)
    assert chosen.success.float().mean() >= 0.5
    assert choices_mattered, "some input should have successful targets of different L0"


def test_least_perturbation_prefers_success_over_smaller_l0():
    """A failed target whose attempt changed fewer pixels than the successful ones is not chosen."""
    # logits = W x + b on 12 features starting at the low bound, label 0 (bias 1.5). Class 1 reads
    # features 0-3 (weight 1): two pairs raise its logit from -4 to 4, L0 = 4. Class 3 reads features
    # 4-11 (weight 0.25): four pairs raise it from -2 to 2, L0 = 8. Class 2 reads nothing: its target
    # derivative is negative everywhere, so its attempt stops at once with no admissible pair, L0 = 0.
    weight = torch.zeros(4, 12)
    weight[1, :4], weight[3, 4:] = 1.0, 0.25
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).eval()
    with torch.no_grad():
        net[1].weight.copy_(weight)
        net[1].bias.copy_(torch.tensor([1.5, 0.0, -10.0, 0.0]))
    x = torch.full((1, 1, 3, 4), -1.0)
    y = torch.tensor([0])
    kwargs = dict(theta=2.0, gamma=1.0)
    with torch.no_grad():
        assert int(net(x).argmax(1)) == 0
    per_target = {c: jsma(net, x, torch.tensor([c]), **kwargs) for c in (1, 2, 3)}
    ok = [c for c in per_target if per_target[c].success[0]]
    failed = [c for c in per_target if not per_target[c].success[0]]
    assert ok and failed
    assert {c: int(r.l0[0]) for c, r in per_target.items()} == {1: 4, 2: 0, 3: 8}
    smallest_ok = min(int(per_target[c].l0[0]) for c in ok)
    # Precondition: a failed attempt changed fewer pixels than every successful one.
    assert min(int(per_target[c].l0[0]) for c in failed) < smallest_ok
    expected = min(ok, key=lambda c: (int(per_target[c].l0[0]), c))
    assert (expected, smallest_ok) == (1, 4)

    chosen = jsma_least_perturbation(net, x, y, num_classes=4, **kwargs)
    assert bool(chosen.success[0]) and int(chosen.target[0]) == expected
    assert int(chosen.l0[0]) == smallest_ok
    assert torch.equal(chosen.adversarial, per_target[expected].adversarial)
    assert torch.equal(chosen.iterations, per_target[expected].iterations)


def test_least_perturbation_does_not_depend_on_batch_size(model, seeds):
    x, y = seeds
    x, y = x[:4], y[:4]
    kwargs = dict(num_classes=NUM_CLASSES, theta=2.0, gamma=0.2, record_trajectory=True)
    large = jsma_least_perturbation(model, x, y, batch_size=128, **kwargs)
    single = jsma_least_perturbation(model, x, y, batch_size=1, **kwargs)
    assert len(set(large.iterations.tolist())) > 1, "attempts should finish at different iterations"
    for field in ("adversarial", "target", "success", "prediction", "iterations", "l0"):
        assert torch.equal(getattr(single, field), getattr(large, field)), field
    assert len(single.trajectory) == len(large.trajectory) == len(x)
    for a, b in zip(single.trajectory, large.trajectory, strict=True):
        assert torch.equal(a, b)


def test_jsma_never_changes_a_pixel_twice():
    """Both pixels of a picked pair leave the search domain (Papernot et al.'s Algorithm 3, cleverhans),
    even when |theta| is well below the box width and they could move further."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(3, 36, generator=gen) * 0.1)
        net[1].bias.copy_(torch.tensor([0.5, 0.5, -0.5]))  # class 2 is far: many iterations
    x = torch.rand(4, 1, 6, 6, generator=gen) - 0.5  # mid-box: a pixel could take several 0.3 steps
    target = torch.full((4,), 2)
    with torch.no_grad():
        assert (net(x).argmax(1) != target).all()
    for theta in (0.3, -0.3):
        result = jsma(net, x, target, theta=theta, gamma=1.0, record_trajectory=True)
        assert int(result.iterations.min()) >= 5, "the test needs many iterations"
        for i, steps in enumerate(result.trajectory):
            changed = (steps[1:] != steps[:-1]).flatten(1)  # (iterations, F)
            assert (changed.sum(1) <= 2).all(), "a step changes at most the two pixels of its pair"
            assert (changed.sum(0) <= 1).all(), "a pixel changed in more than one step"
            assert (result.adversarial[i] - x[i]).abs().max() <= abs(theta) + 1e-6


def test_trajectory_runs_from_the_seed_to_the_adversarial_input(model, seeds):
    x, y = seeds
    x, y = x[:6], y[:6]
    result = jsma(model, x, (y + 1) % NUM_CLASSES, theta=1.0, gamma=0.2, record_trajectory=True)
    assert result.trajectory is not None and len(result.trajectory) == len(x)
    for i, steps in enumerate(result.trajectory):
        assert steps.shape == (int(result.iterations[i]) + 1, *x.shape[1:])
        assert torch.equal(steps[0], x[i])
        assert torch.equal(steps[-1], result.adversarial[i])
        # Every iteration moves at most the two features of its pair.
        assert ((steps[1:] != steps[:-1]).flatten(1).sum(1) <= 2).all()
    untracked = jsma(model, x, (y + 1) % NUM_CLASSES, theta=1.0, gamma=0.2)
    assert untracked.trajectory is None and torch.equal(untracked.adversarial, result.adversarial)


def test_adaptive_attack_succeeds_where_saturated_softmax_hides_the_gradient(model, seeds):
    x, y = seeds
    factor = 60.0
    distilled = Scaled(model, factor).eval()
    target = (y + 1) % NUM_CLASSES
    # Precondition: in float32 softmax(Z) is exactly one-hot, so its Jacobian is exactly zero.
    probe = x.clone().requires_grad_(True)
    probs = torch.softmax(distilled(probe), dim=1)
    assert ((probs == 0) | (probs == 1)).all()
    (grad,) = torch.autograd.grad(probs.gather(1, target[:, None]).sum(), probe)
    assert (grad == 0).all()

    regular = jsma(distilled, x, target, theta=1.0, gamma=0.6, temperature=1.0)
    assert not regular.success.any()
    assert (regular.iterations == 0).all()  # no admissible pair: the saliency map is all zero
    adaptive = jsma(distilled, x, target, theta=1.0, gamma=0.6, temperature=factor)
    assert adaptive.success.float().mean() > 0.5


def test_batched_attack_equals_one_input_at_a_time(model, seeds):
    x, y = seeds
    x, y = x[:8], y[:8]
    target = (y + 3) % NUM_CLASSES
    batched = jsma(model, x, target, theta=1.0, gamma=0.2, record_trajectory=True)
    assert len(set(batched.iterations.tolist())) > 1, "inputs should finish at different iterations"
    for i in range(len(x)):
        single = jsma(model, x[i:i + 1], target[i:i + 1], theta=1.0, gamma=0.2, record_trajectory=True)
        assert torch.equal(single.adversarial[0], batched.adversarial[i])
        assert torch.equal(single.iterations[0], batched.iterations[i])
        assert torch.equal(single.success[0], batched.success[i])
        assert torch.equal(single.trajectory[0], batched.trajectory[i])
    # Splitting the batch internally changes nothing either.
    split = jsma(model, x, target, theta=1.0, gamma=0.2, batch_size=3)
    assert torch.equal(split.adversarial, batched.adversarial)


def test_decreasing_features_and_bad_arguments(model, seeds):
    x, y = seeds
    result = jsma(model, x[:4], (y[:4] + 1) % NUM_CLASSES, theta=-0.5, gamma=0.1)
    assert (result.adversarial <= x[:4]).all()
    with pytest.raises(ValueError, match="box"):
        jsma(model, x[:2] * 3, y[:2])
    with pytest.raises(ValueError, match="theta"):
        jsma(model, x[:2], y[:2], theta=0.0)
    with pytest.raises(ValueError, match="labels"):
        jsma_least_perturbation(model, x[:2], y[:2] + NUM_CLASSES, num_classes=NUM_CLASSES)


def test_pair_search_matches_the_saliency_map_definition():
    from advflow.attacks.jsma import _best_pairs

    gen = torch.Generator().manual_seed(0)
    n, f = 6, 10
    d_target = torch.randn(n, f, generator=gen)
    d_others = -d_target  # the rows of a softmax Jacobian sum to zero (next test)
    domain = torch.rand(n, f, generator=gen) > 0.3
    domain[-1] = False  # nothing admissible
    domain[-1, :2] = True
    d_target[-1, :2] = -1.0
    for increasing in (True, False):
        if not increasing:
            d_target[-1, :2] = 1.0
        p, q, found = _best_pairs(d_target, domain, increasing)
        for i in range(n):
            best, pair = 0.0, None  # Papernot's definition, pair by pair, in float64
            for a in range(f):
                for b in range(a + 1, f):
                    if not (domain[i, a] and domain[i, b]):
                        continue
                    alpha = float(d_target[i, a]) + float(d_target[i, b])
                    beta = float(d_others[i, a]) + float(d_others[i, b])
                    admissible = alpha > 0 > beta if increasing else alpha < 0 < beta
                    if admissible and abs(alpha) * abs(beta) > best:
                        best, pair = abs(alpha) * abs(beta), {a, b}
            assert bool(found[i]) == (pair is not None)
            if pair is not None:
                assert {int(p[i]), int(q[i])} == pair
        # Tiny derivatives (a nearly saturated softmax) give the same pairs: no underflow to "none".
        tiny = _best_pairs(d_target * 1e-30, domain, increasing)
        assert torch.equal(tiny[0], p) and torch.equal(tiny[1], q) and torch.equal(tiny[2], found)


def test_one_backward_pass_gives_both_rows_of_the_saliency_map(model, seeds):
    """sum_{j != t} dF_j/dx = -dF_t/dx for F = softmax(Z / T): computed in float64 both ways."""
    from advflow.attacks.jsma import _target_derivative

    x, y = seeds
    net = copy.deepcopy(model).double()
    xd, target = x[:4].double(), (y[:4] + 2) % NUM_CLASSES
    _, d_target = _target_derivative(net, xd, target, 3.0)
    probe = xd.clone().requires_grad_(True)
    probs = torch.softmax(net(probe) / 3.0, dim=1)
    others = probs.masked_fill(torch.nn.functional.one_hot(target, NUM_CLASSES).bool(), 0.0).sum()
    (d_others,) = torch.autograd.grad(others, probe)
    torch.testing.assert_close(d_others.flatten(1), -d_target, rtol=1e-9, atol=1e-12)


class TinyConv(nn.Module):
    """conv 2->3 (3x3, 'same'), ReLU, 2x2 max-pool, fully connected to 3 classes, on 2x6x6 inputs:
    two input channels, so that a wrong channel order in the flattened derivative would show."""

    def __init__(self, flatten_with_view: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 3 * 3, 3)
        self.flatten_with_view = flatten_with_view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.max_pool2d(torch.relu(self.conv(x)), 2)
        # .view fails on channels_last activations: the attack must then run the model as it is.
        return self.fc(h.view(h.shape[0], -1) if self.flatten_with_view else h.flatten(1))


def _tiny_conv(seed: int, flatten_with_view: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    return TinyConv(flatten_with_view).eval()


def _reference_jsma(net: nn.Module, x: torch.Tensor, target: int, theta: float, gamma: float) -> torch.Tensor:
    """Papernot et al.'s Algorithm 3 on one input, written out: the full Jacobian of softmax(Z), the
    pair search over all F x F pairs of the search domain with alpha (target row) and beta (sum of the
    other rows), both features of a picked pair out of the domain, a budget of floor(gamma * F / 2)."""
    x = x.clone()
    flat = x.view(-1)
    f = flat.numel()
    increasing = theta > 0
    domain = flat < 1.0 if increasing else flat > -1.0
    for _ in range(math.floor(gamma * f / 2)):
        if int(net(x[None]).argmax(1)) == target or int(domain.sum()) < 2:
            break
        jac = torch.autograd.functional.jacobian(lambda v: torch.softmax(net(v.view(1, *x.shape)), 1)[0], flat)
        d_t, d_o = jac[target], jac.sum(0) - jac[target]
        alpha, beta = d_t[:, None] + d_t[None, :], d_o[:, None] + d_o[None, :]
        ok = domain[:, None] & domain[None, :] & ~torch.eye(f, dtype=torch.bool)
        ok &= (alpha > 0) & (beta < 0) if increasing else (alpha < 0) & (beta > 0)
        score = torch.where(ok, alpha.abs() * beta.abs(), -1.0)
        if not ok.any():
            break
        p, q = divmod(int(score.argmax()), f)
        for feature in (p, q):
            flat[feature] = (flat[feature] + theta).clamp(-1.0, 1.0)
            domain[feature] = False
    return x


def test_fast_path_equals_a_straightforward_reference():
    """jsma (batched, channels_last convolution weights, top-2 pair search) picks the pairs that the
    written-out algorithm picks, on a small convolutional model in float64, and changes every pixel
    at most once."""
    from advflow.attacks.jsma import _conv_weights_channels_last

    net = _tiny_conv(0).double()
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(6, 2, 6, 6, generator=gen, dtype=torch.float64) * 1.6 - 0.8)
    with torch.no_grad():
        target = (net(x).argmax(1) + 1) % 3
    assert _conv_weights_channels_last(net, x) is not None, "the test should exercise the fast path"
    iterations = []
    for theta, gamma in ((0.6, 1.0), (-0.6, 1.0), (1.5, 0.5)):
        result = jsma(net, x, target, theta=theta, gamma=gamma, record_trajectory=True)
        iterations += result.iterations.tolist()
        for i in range(len(x)):
            expected = _reference_jsma(net, x[i], int(target[i]), theta, gamma)
            assert torch.equal(result.adversarial[i], expected), (theta, i)
            changed = (result.trajectory[i][1:] != result.trajectory[i][:-1]).flatten(1)
            assert (changed.sum(0) <= 1).all(), "a pixel changed in more than one step"
    assert max(iterations) >= 3 and min(iterations) < max(iterations), "the test needs varied, long attacks"


def test_channels_last_derivative_equals_the_plain_one(model, seeds, monkeypatch):
    """The fast path (channels_last convolution weights, NHWC input) computes the model's logits and
    target derivative, up to float32 summation order, and here the same attack."""
    module = importlib.import_module("advflow.attacks.jsma")  # the package's ``jsma`` is the function

    x, y = seeds
    target = (y + 1) % NUM_CLASSES
    params = module._conv_weights_channels_last(model, x)
    assert params is not None
    logits, d_target = module._target_derivative(model, x, target, 1.0, params)
    plain_logits, plain_d_target = module._target_derivative(model, x, target, 1.0)
    torch.testing.assert_close(logits, plain_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(d_target, plain_d_target, rtol=1e-4, atol=1e-8)
    assert dict(model.named_parameters())["blocks.1.conv.weight"].is_contiguous(), "the model is untouched"

    fast = jsma(model, x, target, theta=2.0, gamma=0.2)
    monkeypatch.setattr(module, "_conv_weights_channels_last", lambda *args: None)
    plain = jsma(model, x, target, theta=2.0, gamma=0.2)
    assert torch.equal(fast.adversarial, plain.adversarial) and torch.equal(fast.iterations, plain.iterations)


def test_a_model_that_cannot_run_channels_last_runs_as_it_is(monkeypatch):
    module = importlib.import_module("advflow.attacks.jsma")  # the package's ``jsma`` is the function

    net = _tiny_conv(0, flatten_with_view=True).double()
    x = torch.rand(4, 2, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 1.6 - 0.8
    with pytest.raises(RuntimeError):  # precondition: the fast path fails on this model
        module._target_derivative(net, x, torch.zeros(4, dtype=torch.long), 1.0,
                                  module._conv_weights_channels_last(net, x))
    with torch.no_grad():
        target = (net(x).argmax(1) + 1) % 3
    result = jsma(net, x, target, theta=0.6, gamma=1.0)
    assert int(result.iterations.max()) >= 2
    for i in range(len(x)):
        assert torch.equal(result.adversarial[i], _reference_jsma(net, x[i], int(target[i]), 0.6, 1.0))
