"""The Jacobian-based Saliency Map Attack, batched (Papernot et al. 2016, "The Limitations of Deep
Learning in Adversarial Settings", Algorithms 2 and 3), and its adaptive variant against defensive
distillation (Carlini & Wagner 2016, "Defensive Distillation is Not Robust to Adversarial Examples").

Each iteration takes the forward derivative of F = softmax(Z / T) with respect to the input, builds
Papernot's pairwise saliency map over the features still in the search domain and adds ``theta`` to the
best pair. The search domain starts as the features that can still move in theta's direction (not
already at the box bound), and both features of a picked pair leave it whatever their new value
(Algorithm 3, as in cleverhans), so each feature is changed at most once. T = 1 is the regular attack.
On a defensively distilled model softmax(Z) saturates to exactly one-hot in float32, so its derivative,
and with it every saliency, is exactly zero; dividing the logits by the distillation temperature
restores them (C&W's adaptive JSMA, T = the model's T).

Inputs live in the box ``clip`` (the models' [-1, 1] space) and never leave it. All inputs of a batch
are attacked together: one forward and one backward pass per iteration for the whole batch, and a
pair search that is exact in O(F) per input (the softmax Jacobian's rows sum to zero, which turns the
F x F search into a top-2), where F = C * H * W. An input stops as soon as it is done; the others go on.
Nearly all the time goes to the model's forward and backward passes; on the CPU they run with the
convolution weights in channels_last layout (oneDNN's NHWC kernels, no per-layer layout conversions),
which gives the same values up to float32 summation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

@dataclass
class JSMAResult:
    """What :func:`jsma` and :func:`jsma_least_perturbation` return, one entry per input.

    ``success`` is the model's argmax (at T = 1) on ``adversarial`` equal to ``target``, which is
    also ``prediction == target``. ``iterations`` counts the pair updates applied; ``l0`` the features
    that differ from the seed. ``trajectory`` (only with ``record_trajectory=True``) holds, per input, a
    ``(iterations + 1, C, H, W)`` tensor on the CPU: the seed, then the input after every update, the
    last row being ``adversarial``.
    """

    adversarial: torch.Tensor  # (N, C, H, W), same dtype and device as the seeds
    target: torch.Tensor  # (N,) int64
    success: torch.Tensor  # (N,) bool
    prediction: torch.Tensor  # (N,) int64, argmax of the logits on ``adversarial``
    iterations: torch.Tensor  # (N,) int64
    l0: torch.Tensor  # (N,) int64
    trajectory: list[torch.Tensor] | None = None


def max_iterations(num_features: int, gamma: float) -> int:
    """Papernot's Algorithm 3 budget, floor(gamma * F / 2): two features per iteration, so at most
    gamma * F features are ever changed."""
    return int(math.floor(gamma * num_features / 2))


def _check(x: torch.Tensor, target: torch.Tensor, theta: float, gamma: float, temperature: float,
           clip: tuple[float, float]) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W); got {tuple(x.shape)}")
    if target.shape != (x.shape[0],):
        raise ValueError(f"target must have shape ({x.shape[0]},); got {tuple(target.shape)}")
    if theta == 0:
        raise ValueError("theta must be non-zero (> 0 increases features, < 0 decreases them)")
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma is the largest share of features changed and must lie in (0, 1]; got {gamma}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    low, high = clip
    if not low < high:
        raise ValueError(f"clip must be (low, high) with low < high; got {clip}")
    if x.numel() and (x.min() < low or x.max() > high):
        raise ValueError(f"inputs must lie in the box {clip}; got values in [{float(x.min())}, {float(x.max())}]")


def _conv_weights_channels_last(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """channels_last copies of the model's 4-D (convolution) parameters, for :func:`_target_derivative`;
    None where they would not help (no 4-D parameters, or not on a oneDNN CPU).

    With channels_last weights, oneDNN runs the convolutions and their input gradients in NHWC with its
    brgemm kernels and without converting every activation between PyTorch's NCHW and its blocked
    layout and back, and max-pooling runs on NHWC too; this is most of the cost of an iteration. The
    values are the model's own (the model itself is not touched); only the memory layout differs, so
    the logits and derivatives equal the NCHW ones up to float32 summation order.
    """
    if x.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    params = dict(model.named_parameters())
    if not any(p.dim() == 4 for p in params.values()):
        return None
    return {name: p.detach().contiguous(memory_format=torch.channels_last) if p.dim() == 4 else p.detach()
            for name, p in params.items()}


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` (N, C, H, W) laid out channels_last, also for C = 1, whose NCHW and NHWC strides
    PyTorch otherwise treats as the same (and then runs the first convolution in NCHW)."""
    _, c, h, w = x.shape
    return torch.empty_strided(x.shape, (c * h * w, 1, w * c, c), dtype=x.dtype, device=x.device).copy_(x)


def _target_derivative(model: nn.Module, x: torch.Tensor, target: torch.Tensor, temperature: float,
                       params: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits, and dF_t/dx flattened to (N, F), where F = softmax(Z / T): one backward pass.

    The saliency map also needs the sum of the other classes' rows, sum_{j != t} dF_j/dx. Softmax
    outputs sum to one, so that sum is exactly -dF_t/dx and needs no second pass (see
    :func:`_best_pairs`). Summing the target probabilities over the batch before differentiating is
    exact because each output row depends only on its own input (the model runs in eval mode and has
    no batch-coupled layers). ``params`` (from :func:`_conv_weights_channels_last`) runs the model with
    those parameters, on a channels_last copy of ``x``.
    """
    if params is not None:
        x = _nhwc(x)
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x) if params is None else functional_call(model, params, (x,))
        probs = torch.softmax(logits / temperature, dim=1)
        (d_target,) = torch.autograd.grad(probs.gather(1, target[:, None]).sum(), x)
    return logits.detach(), d_target.reshape(d_target.shape[0], -1)


def _best_pairs(d_target: torch.Tensor, domain: torch.Tensor,
                increasing: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Papernot's pairwise saliency map (Algorithm 3), maximised per input, in O(F) per input.

    For features p != q of the search domain, alpha = dF_t/dx_p + dF_t/dx_q and beta the same sum
    over the other classes. Increasing features admits pairs with alpha > 0 and beta < 0, decreasing
    the mirror (alpha < 0, beta > 0), and the score is -alpha * beta. On the Jacobian of a softmax,
    beta = -alpha exactly (the outputs sum to one), so a pair is admissible iff alpha > 0 (increasing;
    alpha < 0 decreasing) and its score is alpha ** 2: the best pair is the two largest (smallest)
    target derivatives in the domain, and it is admissible iff their sum is positive (negative). This
    is the same argmax as the F x F pair search, without building it.
    Returns ``(p, q, found)``; ``found`` is False where no pair is admissible (e.g. all derivatives are
    zero because softmax saturated).
    """
    sign = 1.0 if increasing else -1.0
    # Features outside the domain get -inf and are never among the top two while two domain
    # features remain (the caller stops an input before fewer than two do).
    alpha = torch.where(domain, sign * d_target, -math.inf)
    top, index = alpha.topk(2, dim=1)
    found = top.sum(1) > 0
    return index[:, 0], index[:, 1], found


def _jsma_batch(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, theta: float, gamma: float,
                temperature: float, clip: tuple[float, float],
                record_trajectory: bool) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
    """One batch of :func:`jsma`; returns (adversarial, iterations, trajectory)."""
    n = x.shape[0]
    low, high = clip
    increasing = theta > 0
    adv = x.detach().clone(memory_format=torch.contiguous_format)  # so that ``flat`` is a view
    flat = adv.view(n, -1)
    num_features = flat.shape[1]
    budget = max_iterations(num_features, gamma)
    # Search domain: initially the features that can still move in theta's direction (not already at
    # the bound). Both features of a picked pair leave it after their update, whatever their new value
    # (Algorithm 3, as in cleverhans), so every feature is changed at most once, by at most |theta|.
    domain = flat < high if increasing else flat > low
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    done = (domain.sum(1) < 2) | (budget == 0)
    params = _conv_weights_channels_last(model, x)
    # copy=True: on the CPU .cpu() would alias ``adv``, which is updated in place.
    steps: list[list[torch.Tensor]] | None = (
        [[row.to("cpu", copy=True)] for row in adv] if record_trajectory else None)

    while not bool(done.all()):
        rows = (~done).nonzero().squeeze(1)
        try:
            logits, d_target = _target_derivative(model, adv[rows], target[rows], temperature, params)
        except RuntimeError:
            if params is None or bool(iterations.any()):
                raise
            # A model that cannot run on channels_last tensors (e.g. one that calls .view on its
            # activations) runs as it is; this shows on the first pass, before any update.
            params = None
            logits, d_target = _target_derivative(model, adv[rows], target[rows], temperature)
        searching = logits.argmax(1) != target[rows]
        done[rows[~searching]] = True
        rows, d_target = rows[searching], d_target[searching]
        if rows.numel() == 0:
            continue
        p, q, found = _best_pairs(d_target, domain[rows], increasing)
        # An input with no admissible pair stops: nothing would change, so no later iteration could
        # find one either (the attack is deterministic).
        done[rows[~found]] = True
        rows, p, q = rows[found], p[found], q[found]
        if rows.numel() == 0:
            continue
        with torch.no_grad():
            for feature in (p, q):
                flat[rows, feature] = (flat[rows, feature] + theta).clamp(low, high)
                domain[rows, feature] = False  # picked once, never again
        iterations[rows] += 1
        done[rows] |= (iterations[rows] >= budget) | (domain[rows].sum(1) < 2)
        if steps is not None:
            for i, row in zip(rows.tolist(), adv[rows].cpu(), strict=True):
                steps[i].append(row)

    trajectory = [torch.stack(s) for s in steps] if steps is not None else None
    return adv, iterations, trajectory


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """argmax of the logits (T = 1), in batches."""
    out = [model(x[s:s + batch_size]).argmax(1) for s in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


def jsma(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, theta: float = 0.1, gamma: float = 0.1,
         temperature: float = 1.0, clip: tuple[float, float] = (-1.0, 1.0), record_trajectory: bool = False,
         batch_size: int = 128) -> JSMAResult:
    """Targeted JSMA (Papernot et al. 2016, Algorithm 3) on a batch of inputs.

    ``x`` (N, C, H, W) in the box ``clip``; ``target`` (N,) class indices. Each iteration adds ``theta``
    to the two features of the best pair of Papernot's saliency map on the Jacobian of
    softmax(Z / ``temperature``), clipped to the box; ``theta > 0`` increases features, ``theta < 0``
    decreases them. Both features of a picked pair then leave the search domain, so each feature is
    changed at most once (by at most ``|theta|``). An input stops when the model (argmax of Z, i.e.
    T = 1) classifies it as the target, when fewer than two features remain in its search domain, when
    no pair is admissible, or after floor(``gamma`` * F / 2) iterations, so at most ``gamma`` * F
    features change.

    ``temperature`` = 1 is the regular attack; the distillation temperature gives Carlini & Wagner's
    adaptive attack on a distilled model. ``batch_size`` inputs are attacked together (results do not
    depend on it). The model is put in eval mode for the attack and restored afterwards.
    """
    target = torch.as_tensor(target, dtype=torch.long, device=x.device)
    _check(x, target, theta, gamma, temperature, clip)
    was_training = model.training
    model.eval()
    try:
        advs, iters, trajectory = [], [], [] if record_trajectory else None
        for start in range(0, x.shape[0], batch_size):
            adv, it, traj = _jsma_batch(model, x[start:start + batch_size], target[start:start + batch_size],
                                        theta=theta, gamma=gamma, temperature=temperature, clip=clip,
                                        record_trajectory=record_trajectory)
            advs.append(adv)
            iters.append(it)
            if trajectory is not None and traj is not None:
                trajectory.extend(traj)
        adversarial = torch.cat(advs) if advs else x.detach().clone()
        iterations = torch.cat(iters) if iters else torch.zeros(0, dtype=torch.long, device=x.device)
        prediction = _predict(model, adversarial, batch_size)
    finally:
        model.train(was_training)
    return JSMAResult(adversarial=adversarial, target=target, success=prediction == target, prediction=prediction,
                      iterations=iterations, l0=(adversarial != x).flatten(1).sum(1), trajectory=trajectory)


def jsma_least_perturbation(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
                            theta: float = 0.1, gamma: float = 0.1, temperature: float = 1.0,
                            clip: tuple[float, float] = (-1.0, 1.0), record_trajectory: bool = False,
                            batch_size: int = 128) -> JSMAResult:
    """Untargeted JSMA as Papernot et al. 2016 evaluate it: the target needing the least perturbation.

    Every input is attacked towards each of the ``num_classes - 1`` classes other than its label (all
    pairs in one batched :func:`jsma` run). Per input the result is the successful attempt with the
    fewest changed features (ties: the smallest L2 norm of the perturbation, then the lowest class);
    if no target succeeds, the attempt with the fewest changed features, with ``success`` False.
    ``result.target`` is the chosen target. Other arguments as in :func:`jsma`.
    """
    labels = torch.as_tensor(labels, dtype=torch.long, device=x.device)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2; got {num_classes}")
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},); got {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    n, k = x.shape[0], num_classes - 1
    classes = torch.arange(num_classes, device=x.device).expand(n, num_classes)
    targets = classes[classes != labels[:, None]].view(n, k)  # ascending, label left out
    attempts = jsma(model, x.repeat_interleave(k, dim=0), targets.reshape(-1), theta=theta, gamma=gamma,
                    temperature=temperature, clip=clip, record_trajectory=record_trajectory, batch_size=batch_size)

    l0 = attempts.l0.view(n, k)
    l2 = (attempts.adversarial - x.repeat_interleave(k, dim=0)).flatten(1).double().norm(dim=1).view(n, k)
    success = attempts.success.view(n, k)
    # Successful attempts rank before failed ones, then fewer changed features, then smaller L2;
    # argmin takes the first (lowest class) among exact ties.
    rank = (~success).long() * (math.prod(x.shape[1:]) + 1) + l0
    best = rank == rank.min(dim=1, keepdim=True).values
    choice = torch.where(best, l2, torch.full_like(l2, math.inf)).argmin(dim=1)
    pick = torch.arange(n, device=x.device) * k + choice
    return JSMAResult(
        adversarial=attempts.adversarial[pick], target=attempts.target[pick], success=attempts.success[pick],
        prediction=attempts.prediction[pick], iterations=attempts.iterations[pick], l0=attempts.l0[pick],
        trajectory=[attempts.trajectory[i] for i in pick.tolist()] if attempts.trajectory is not None else None)
