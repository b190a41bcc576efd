"""MINE and the MID detector (docs/method.md, "Defenses and detectors", MID; seed 003).

MINE (Belghazi et al. 2018, "Mutual Information Neural Estimation", ICML, arXiv:1801.04062) estimates the
mutual information of two vectors a, b from joint samples (a_i, b_i) with the Donsker-Varadhan (DV) bound

    I(A; B) >= I_T = E_joint[T(a, b)] - log E_marginal[exp T(a, b)],

maximized over a statistics network T_theta (:class:`StatisticsNetwork`). Marginal samples are the joint
samples with b shuffled: (a_i, b_perm(i)), perm a derangement (no pair keeps its own b).
The gradient of the second term, E_marg[exp T grad T] / E_marg[exp T], is biased when both expectations come
from one minibatch; Section 3.2 / Algorithm 1 replace the denominator by an exponential moving average (EMA)
v <- (1 - r) v + r mean_batch exp T, with rate r = ``ema_rate``. The surrogate loss

    -(mean_joint T - mean_marg exp T / v),   v held constant,

has exactly that gradient (:func:`ema_step`). The EMA is kept in log space (exp T overflows) and starts at the
first batch's value, so it needs no start-up bias correction (public MINE code often starts it at 0 or 1 without
one). The EMA shapes the optimization only: the bound is invariant to T + c, so the DV estimate's target is the
same for any v. After training, the DV bound is evaluated on all N pairs with ``shuffles`` derangements.

The MID detector (:class:`MIDDetector`; Hsu et al. 2019, seed 003) trains T_theta on clean pairs
(softmax f(x), softmax f(AE(x))) and scores one input x by the pointwise estimate over clean references x_j,

    i(x) = T(f(x), f(AE(x))) - log mean_j exp T(f(x), f(AE(x_j))),

low i(x) = adversarial; its score is -i(x) (higher = more suspicious, :class:`advflow.defenses.Detector`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from advflow.defenses import Detector

#: Largest number of (input, reference) pairs T_theta sees at once when scoring (memory ~ this x hidden floats).
PAIR_CHUNK = 1 << 16


@dataclass(frozen=True)
class MineSettings:
    """Training of T_theta: ``steps`` Adam steps (learning rate ``lr``, cosine-decayed to 0 so the last steps
    settle) on minibatches of ``batch_size`` joint pairs and as many shuffled pairs, EMA rate ``ema_rate``
    (1 = the plain, biased DV gradient); an MLP of ``layers`` hidden layers of ``hidden`` units; the final DV
    estimate uses ``shuffles`` derangements for its marginal term. ``seed`` fixes T_theta's initial weights,
    the batches and the shuffles."""

    hidden: int = 64
    layers: int = 2
    steps: int = 1000
    batch_size: int = 512
    lr: float = 2e-3
    ema_rate: float = 0.01
    shuffles: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "steps", "batch_size", "shuffles"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MineSettings.{name} must be a positive integer; got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"MineSettings.lr must be a positive number; got {self.lr!r}")
        if not (isinstance(self.ema_rate, (int, float)) and 0.0 < self.ema_rate <= 1.0):
            raise ValueError(f"MineSettings.ema_rate must be in (0, 1] (1 = no moving average); got {self.ema_rate!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"MineSettings.seed must be an integer; got {self.seed!r}")


class StatisticsNetwork(nn.Module):
    """T_theta(a, b): an MLP (ELU) on the concatenation [a, b] of ``a (N, dim_a)`` and ``b (N, dim_b)``."""

    def __init__(self, dim_a: int, dim_b: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.dim_a, self.dim_b = dim_a, dim_b
        modules: list[nn.Module] = []
        width = dim_a + dim_b
        for _ in range(layers):
            modules += [nn.Linear(width, hidden), nn.ELU()]
            width = hidden
        self.mlp = nn.Sequential(*modules, nn.Linear(width, 1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(N,)`` values T(a_i, b_i)."""
        return self.mlp(torch.cat([a, b], dim=-1)).squeeze(-1)

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(N, M)`` values T(a_i, b_j) of ``a (N, dim_a)`` and ``b (M, dim_b)``."""
        n, m = a.shape[0], b.shape[0]
        return self(a[:, None, :].expand(n, m, a.shape[1]), b[None, :, :].expand(n, m, b.shape[1]))


def _log_mean_exp(t: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(t, dim=0) - math.log(t.numel())


def seeded_network(dim_a: int, dim_b: int, settings: MineSettings) -> StatisticsNetwork:
    """A :class:`StatisticsNetwork` whose initial weights depend on ``settings.seed`` only (the global RNG is
    left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return StatisticsNetwork(dim_a, dim_b, settings.hidden, settings.layers)


def ema_step(t_joint: torch.Tensor, t_marginal: torch.Tensor, log_ema: torch.Tensor | None,
             ema_rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One MINE step's surrogate loss and updated log EMA, from T on a minibatch's joint pairs ``t_joint (B,)``
    and shuffled pairs ``t_marginal (M,)``. The EMA v of mean exp T starts at the first batch's value (``log_ema``
    None). The loss's gradient is -(grad mean t_joint - grad mean exp t_marginal / v): the DV bound's gradient
    with its denominator, mean exp t_marginal, replaced by v (Belghazi et al. 2018, Section 3.2)."""
    current = _log_mean_exp(t_marginal.detach())
    if log_ema is not None and ema_rate < 1:  # v <- (1 - r) v + r mean exp T, in log space
        current = torch.logaddexp(math.log1p(-ema_rate) + log_ema, math.log(ema_rate) + current)
    return -(t_joint.mean() - torch.exp(_log_mean_exp(t_marginal) - current)), current


def train(network: StatisticsNetwork, a: torch.Tensor, b: torch.Tensor, settings: MineSettings) -> np.ndarray:
    """Maximize the DV bound of ``network`` on joint samples ``a (N, dim_a)``, ``b (N, dim_b)`` (MINE,
    Algorithm 1, with the EMA-corrected gradient of :func:`ema_step`); returns the ``(steps,)`` minibatch DV
    estimates."""
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=settings.lr, foreach=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.steps)
    n, batch = a.shape[0], min(settings.batch_size, a.shape[0])
    log_ema, history = None, np.empty(settings.steps)
    order, position = torch.randperm(n, generator=generator), 0
    network.train()
    for step in range(settings.steps):
        if position + batch > n:  # a new epoch
            order, position = torch.randperm(n, generator=generator), 0
        joint = order[position:position + batch]
        position += batch
        # One pass over the joint pairs and the shuffled ones (joint holds distinct samples: roll is a derangement).
        t = network(a[joint].repeat(2, 1), b[torch.cat([joint, joint.roll(1)])])
        loss, log_ema = ema_step(t[:batch], t[batch:], log_ema, settings.ema_rate)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        t = t.detach()
        history[step] = float(t[:batch].mean() - _log_mean_exp(t[batch:]))
    network.eval()
    return history


@torch.no_grad()
def dv_bound(network: StatisticsNetwork, a: torch.Tensor, b: torch.Tensor, shuffles: int, seed: int) -> float:
    """The DV estimate in nats of T = ``network`` on joint samples ``a (N, dim_a)``, ``b (N, dim_b)``: the mean
    of T over the N pairs minus the log mean exp of T over ``shuffles`` derangements of them."""
    generator = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(a.shape[0], generator=generator) for _ in range(shuffles)]
    marginal = [network(a[order], b[order.roll(1)]) for order in orders]  # rolled orders: derangements
    return float(network(a, b).mean() - _log_mean_exp(torch.cat(marginal)))


def _samples(name: str, values: Any) -> torch.Tensor:
    tensor = torch.as_tensor(values).detach().cpu()
    if tensor.dtype == torch.bool or tensor.is_complex() or tensor.ndim != 2:
        raise ValueError(f"{name} must be real samples of shape (N, dim); got dtype {tensor.dtype} and shape "
                         f"{tuple(tensor.shape)} (reshape one-dimensional samples with .reshape(-1, 1))")
    tensor = tensor.to(torch.float32)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} has {int((~torch.isfinite(tensor)).sum())} NaN or infinite entries")
    return tensor


def estimate_mi(a: Any, b: Any, settings: MineSettings = MineSettings()) -> float:
    """MINE's estimate in nats of I(A; B) from joint samples ``a (N, dim_a)``, ``b (N, dim_b)`` (tensors or
    arrays): T_theta trained on all N pairs (:func:`train`), then its DV bound on them (:func:`dv_bound`).
    Equal inputs and settings give the same number (on the CPU, with the same number of threads)."""
    a, b = _samples("a", a), _samples("b", b)
    if a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise ValueError(f"a and b must hold the same number N >= 2 of joint samples; got {a.shape[0]} and "
                         f"{b.shape[0]}")
    network = seeded_network(a.shape[1], b.shape[1], settings)
    train(network, a, b, settings)
    return dv_bound(network, a, b, settings.shuffles, settings.seed)


@contextmanager
def _evaluating(*modules: Any):
    """Callables that are modules run in eval mode (no dropout, no AE input noise) and get their mode back."""
    modes = [(m, m.training) for m in modules if isinstance(m, nn.Module)]
    try:
        yield [m.eval() for m, _ in modes]
    finally:
        for module, mode in modes:
            module.train(mode)


class MIDDetector(Detector):
    """MID (seed 003): MINE on (softmax f(x), softmax f(AE(x))); score(x) = -i(x) (see the module docstring).

    ``f``: classifier, model-space images ``(N, C, H, W)`` in [-1, 1] to logits ``(N, K)``; ``reconstruct``:
    model-space images to model-space images of the same shape (e.g. MagNet's autoencoder wrapped with
    :func:`advflow.defenses.to_pixels` / :func:`~advflow.defenses.from_pixels`, or a
    :class:`~advflow.defenses.magnet.Reformer`). Both run without gradients (with them in
    :meth:`differentiable_score`), in eval mode when they are modules, on f's device; T_theta lives on the CPU.
    ``references``: how many clean training images x_j the score compares with. A fitted state
    (:meth:`state_dict`) holds tensors and plain numbers only; f and reconstruct are supplied again when loading it.
    """

    name = "mid"
    adaptive_surrogate = "exact"

    def __init__(self, f: nn.Module, reconstruct: Callable[[torch.Tensor], torch.Tensor], *,
                 settings: MineSettings = MineSettings(), references: int = 256) -> None:
        if isinstance(references, bool) or not isinstance(references, int) or references < 1:
            raise ValueError(f"references must be a positive integer; got {references!r}")
        self.f, self.reconstruct, self.settings, self.references = f, reconstruct, settings, references
        self.network: StatisticsNetwork | None = None
        self.reference_features: torch.Tensor | None = None  # (R, K): softmax f(AE(x_j))
        self.input_shape: tuple[int, ...] | None = None
        self.fitted_mi = math.nan  # the DV estimate on the training pairs, in nats

    def _check(self, x: torch.Tensor, fitting: bool = False) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
            raise ValueError(f"{self.name} expects a float tensor of images (N, C, H, W) in model space [-1, 1]; got "
                             f"{type(x).__name__} {getattr(x, 'dtype', '')} of shape {tuple(getattr(x, 'shape', ()))}")
        if not fitting and self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name} was fitted on images of shape {self.input_shape}; got {tuple(x.shape[1:])}")
        if x.numel() and not (torch.isfinite(x).all() and x.min() >= -1.0 - 1e-4 and x.max() <= 1.0 + 1e-4):
            raise ValueError(f"{self.name} expects finite images in model space [-1, 1] (advflow.data.to_model_space); "
                             f"got values in [{float(x.min()):.4g}, {float(x.max()):.4g}]")
        return x

    @torch.no_grad()
    def features(self, x: torch.Tensor, fitting: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax f(x) and softmax f(AE(x)) of images ``x (N, C, H, W)``, each ``(N, K)`` float32 on the CPU."""
        return self._features(x, fitting, torch.device("cpu"))

    def _features(self, x: torch.Tensor, fitting: bool, out_device: torch.device,
                  differentiable: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`features` on ``out_device``; ``differentiable``: reconstructing with ``reconstruct.differentiable``
        where it has one (:meth:`advflow.defenses.magnet.Reformer.differentiable`), and refusing one that cuts the
        gradient."""
        x = self._check(x, fitting)
        if x.shape[0] == 0:
            return torch.zeros(0, 0, device=out_device), torch.zeros(0, 0, device=out_device)
        device = next((p.device for p in self.f.parameters()), x.device) if isinstance(self.f, nn.Module) else x.device
        reconstruct = getattr(self.reconstruct, "differentiable", self.reconstruct) if differentiable \
            else self.reconstruct
        p, q = [], []
        with _evaluating(self.f, self.reconstruct):
            for chunk in x.split(self.settings.batch_size):
                chunk = chunk.to(device)
                rebuilt = reconstruct(chunk)
                if rebuilt.shape != chunk.shape:
                    raise ValueError(f"reconstruct must return images of the input's shape {tuple(chunk.shape)}; "
                                     f"got {tuple(rebuilt.shape)}")
                if differentiable and chunk.requires_grad and not rebuilt.requires_grad:
                    raise ValueError(f"{self.name}'s reconstruct returns no gradient (it runs under torch.no_grad or "
                                     f"detaches), so its score is not differentiable; give it a differentiable "
                                     f"reconstruct, or one with a differentiable(x) method (magnet.Reformer)")
                for out, images in ((p, chunk), (q, rebuilt)):
                    logits = self.f(images)
                    if logits.ndim != 2 or logits.shape[0] != chunk.shape[0]:
                        raise ValueError(f"f must return logits (N, K); got shape {tuple(logits.shape)}")
                    out.append(torch.softmax(logits.float(), dim=1).to(out_device))
        return torch.cat(p), torch.cat(q)

    def fit(self, x_train: torch.Tensor) -> MIDDetector:
        """Train T_theta on the clean pairs of ``x_train (N, C, H, W)`` against shuffled pairs, and keep the
        softmax f(AE(x_j)) of ``references`` of them (drawn with ``settings.seed``)."""
        x_train = self._check(x_train, fitting=True)
        if x_train.shape[0] < max(2, self.references):
            raise ValueError(f"{self.name} needs at least max(2, references = {self.references}) clean training "
                             f"images; got {x_train.shape[0]} (lower references or give more images)")
        p, q = self.features(x_train, fitting=True)
        network = seeded_network(p.shape[1], q.shape[1], self.settings)
        train(network, p, q, self.settings)
        chosen = torch.randperm(p.shape[0], generator=torch.Generator().manual_seed(self.settings.seed))
        self.network, self.reference_features = network, q[chosen[:self.references]].clone()
        self.input_shape = tuple(x_train.shape[1:])
        self.fitted_mi = dv_bound(network, p, q, self.settings.shuffles, self.settings.seed)
        return self

    def _fitted(self) -> StatisticsNetwork:
        if self.network is None or self.reference_features is None:
            raise RuntimeError(f"{self.name} is not fitted: call fit(clean training images) or load_state_dict first")
        return self.network

    def _pointwise(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``(N,)`` float32 i(x) of the features ``p, q (N, K)`` of N images (on T_theta's device)."""
        if p.shape[1] != self.reference_features.shape[1]:
            raise ValueError(f"f gives {p.shape[1]} classes; {self.name} was fitted on a classifier of "
                             f"{self.reference_features.shape[1]}")
        refs, chunk = self.reference_features, max(1, PAIR_CHUNK // self.reference_features.shape[0])
        result = []
        for p_chunk, q_chunk in zip(p.split(chunk), q.split(chunk)):
            log_mean_exp = torch.logsumexp(self.network.pairwise(p_chunk, refs), dim=1) - math.log(refs.shape[0])
            result.append(self.network(p_chunk, q_chunk) - log_mean_exp)
        return torch.cat(result)

    @torch.no_grad()
    def pointwise_mi(self, x: torch.Tensor) -> np.ndarray:
        """``(N,)`` float64 i(x) in nats of images ``x (N, C, H, W)``; low = adversarial."""
        self._fitted()
        p, q = self.features(x)
        if p.shape[0] == 0:
            return np.zeros(0)
        return self._pointwise(p, q).double().numpy()

    def score(self, x: torch.Tensor) -> np.ndarray:
        """``(N,)`` float64 scores -i(x) of images ``x (N, C, H, W)``; higher = more suspicious."""
        return -self.pointwise_mi(x)

    def differentiable_score(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`score`, -i(x), as an ``(N,)`` float32 tensor on T_theta's device (the CPU), with its graph through
        f, reconstruct (its ``differentiable`` method where it has one: :meth:`advflow.defenses.magnet.Reformer`'s
        call runs without gradients) and T_theta (exact); the references are constants."""
        device = next(self._fitted().parameters()).device
        p, q = self._features(x, False, device, differentiable=True)
        if p.shape[0] == 0:
            return torch.zeros(0, device=device)
        return -self._pointwise(p, q)

    def state_dict(self) -> dict[str, Any]:
        if self.network is None or self.reference_features is None or self.input_shape is None:
            raise RuntimeError(f"{self.name} is not fitted: there is no state to save")
        return {"network": {k: v.clone() for k, v in self.network.state_dict().items()},
                "references": self.reference_features.clone(), "input_shape": list(self.input_shape),
                "hidden": self.network.mlp[0].out_features, "layers": (len(self.network.mlp) - 1) // 2,
                "fitted_mi": self.fitted_mi}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a fitted state; T_theta's size comes from the state, not from ``settings``."""
        expected = {"network", "references", "input_shape", "hidden", "layers", "fitted_mi"}
        if not isinstance(state, dict) or set(state) != expected:
            raise ValueError(f"a {self.name} state holds keys {sorted(expected)}; got "
                             f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
        refs = state["references"]
        if not isinstance(refs, torch.Tensor) or refs.ndim != 2 or refs.shape[0] < 1:
            raise ValueError(f"a {self.name} state's references must be a tensor (R, K); got {refs!r:.80}")
        network = StatisticsNetwork(refs.shape[1], refs.shape[1], int(state["hidden"]), int(state["layers"]))
        network.load_state_dict(state["network"])
        self.network, self.reference_features = network.eval(), refs.float().cpu().clone()
        self.input_shape = tuple(int(v) for v in state["input_shape"])
        self.fitted_mi = float(state["fitted_mi"])
