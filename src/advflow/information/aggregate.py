"""Aggregated information paths of a set of inputs (docs/method.md, "Aggregated paths"): an exact Gaussian process.

For a set of N inputs, each with a path mu^(k) over conv layers k = 1..K (:mod:`advflow.information.paths`), the
aggregated path is the posterior mean of a Gaussian process fitted to all N K points (k, mu_i^(k)):

    y_ik = f(k) + e_ik,   f ~ GP(c, s^2 RBF(l)),   e_ik ~ N(0, sigma^2) independent,

with a constant mean c and a scaled RBF kernel s^2 exp(-(x - x')^2 / (2 l^2)). The 95 % band is
mean +- 1.96 sd of the latent f (the uncertainty of the aggregated path itself, not the spread of a
new input's path, which would add sigma^2). The aggregated IOC is the pair of the IIP's and the OIP's
means at each layer.

All the points share only K distinct inputs x = k, which makes the exact GP cheap without
approximating it. Per layer k, with n_k points, mean ybar_k and scatter S_k = sum_i (y_ik - ybar_k)^2,

    prod_i N(y_ik; f_k, sigma^2) = N(ybar_k; f_k, sigma^2 / n_k)
                                   * (2 pi sigma^2)^(-(n_k - 1)/2) n_k^(-1/2) exp(-S_k / (2 sigma^2)),

and the second factor does not involve f. So the exact log marginal likelihood of all N K points is
that of a GP on the K means ybar_k with heteroskedastic noise sigma^2 / n_k, plus

    sum_k [ -(n_k - 1)/2 log(2 pi sigma^2) - 1/2 log n_k - S_k / (2 sigma^2) ],

and the posterior of f at any x equals the posterior of the GP on the means. The K x K problem is solved
with GPyTorch's ``ExactGP`` (Cholesky, float64); its likelihood has a noise model (:class:`ReplicateNoise`)
whose diagonal is sigma^2 / n_k with sigma^2 a learned parameter. :func:`marginal_log_likelihood`
and :func:`latent_posterior` evaluate this exactly at given hyperparameters (the tests check both against
a plain GPyTorch ``ExactGP`` on all the points).

:func:`fit_path` standardizes the targets (minus the mean, over the standard deviation, of all points),
maps the layers onto [0, 1], and maximizes the exact marginal likelihood over (c, l, s^2, sigma^2) with
L-BFGS-B (SciPy, torch gradients) in float64. It starts from a deterministic, data-derived point and, when
``restarts > 1``, from further starts drawn from a generator seeded with ``seed``, and keeps the best; the
fit uses no other randomness, so equal inputs and seed give identical numbers. sigma^2 has a floor of
``NOISE_FLOOR`` (in standardized units), so a set whose N inputs all share one path gets that path back
within a band of the order of 1.96 sqrt(floor / N) standard deviations of the points. A set whose points
are all equal (zero variance) has no scale to standardize by: its aggregate is that constant with a
zero-width band, without a fit.

The posterior mean and band are returned in the original units at each layer and on a fine grid
(step ``grid_step``) from the first to the last layer for plotting; :func:`write_aggregate` and
:func:`read_aggregate` store them as CSV. The distance of two aggregated paths is
:func:`advflow.information.paths.path_distance` of their means at the layers (:func:`aggregated_distance`).
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gpytorch
import numpy as np
import torch
from gpytorch.constraints import GreaterThan, Positive
from gpytorch.likelihoods import _GaussianLikelihoodBase
from gpytorch.likelihoods.noise_models import Noise
from linear_operator.operators import DiagLinearOperator
from linear_operator.utils.errors import NanError, NotPSDError

from advflow.workflow.io import atomic_path, open_h5, quarantine
from advflow.information.paths import (
    InputPaths,
    MIRecord,
    input_paths,
    path_distance,
    read_input_paths,
    read_paths_csv,
)
from advflow.attacks.checks import check_set

# Lower bound of sigma^2, the noise variance of one point, in standardized units (the targets' variance is 1).
MIN_LENGTHSCALE_GAPS = 0.5  # the lengthscale's lower bound, in spacings of adjacent layers
NOISE_FLOOR = 1e-6
# 95 % two-sided normal quantile.
Z95 = 1.959963984540054
PATH_NAMES = ("iip", "oip")
_COLUMNS = {"iip": "mu_s", "oip": "mu_t"}
#: The fitted hyperparameters, written on every row of their path (so one file carries the whole fit).
FIT_FIELDS = ("constant", "lengthscale", "outputscale", "noise", "log_marginal_likelihood")
_AGGREGATE_FIELDS = ["path", "layer", "mean", "lower", "upper", "at_layer", *FIT_FIELDS]
_DTYPE = torch.float64


@dataclass(frozen=True)
class AggregatedPath:
    """The GP aggregate of a set of paths, in the paths' units.

    ``layers (K,)``: the distinct layers; ``mean``, ``lower``, ``upper (K,)``: the posterior mean of f and
    its 95 % band there. ``grid (G,)``, ``grid_mean``, ``grid_lower``, ``grid_upper``: the same on a fine
    grid from the first to the last layer. ``counts (K,)``: points per layer (empty when read from a
    file). ``hyperparameters``: the fitted ``constant`` (mean), ``lengthscale`` (in layers),
    ``outputscale`` (variance of f), ``noise`` (sigma^2, variance of one point about f), all in the
    paths' units, with ``log_marginal_likelihood`` of all the points (also read back from a file). For a
    set whose points are all equal (no fit): lengthscale NaN, outputscale and noise 0, likelihood inf;
    :func:`fit_flags` names such fits.
    With a single layer the lengthscale is not identified and stays at its starting value.
    """

    layers: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    grid: np.ndarray
    grid_mean: np.ndarray
    grid_lower: np.ndarray
    grid_upper: np.ndarray
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hyperparameters: dict[str, float] = field(default_factory=dict)

    @property
    def n_points(self) -> int:
        """Number of points (inputs x layers) the aggregate was fitted to; 0 when read from a file."""
        return int(self.counts.sum())


# ---------------------------------------------------------------------------------------------------------
# The GP on the per-layer means


class ReplicateNoise(Noise):
    """Noise covariance diag(sigma^2 / n_k) of the per-layer means, with sigma^2 learned.

    sigma^2 is the variance of one point about f; the mean of n_k points has variance sigma^2 / n_k.
    Defined only on the K training layers: the posterior of f at new inputs does not use it.
    """

    def __init__(self, counts: torch.Tensor, noise_floor: float) -> None:
        super().__init__()
        self.register_buffer("counts", counts)
        self.register_parameter("raw_noise", torch.nn.Parameter(torch.zeros(1, dtype=counts.dtype)))
        self.register_constraint("raw_noise", GreaterThan(noise_floor) if noise_floor > 0 else Positive())

    @property
    def noise(self) -> torch.Tensor:
        """sigma^2, the noise variance of one point."""
        return self.raw_noise_constraint.transform(self.raw_noise)

    @noise.setter
    def noise(self, value: float | torch.Tensor) -> None:
        value = torch.as_tensor(value, dtype=self.raw_noise.dtype).reshape(1)
        self.initialize(raw_noise=self.raw_noise_constraint.inverse_transform(value))

    def forward(self, *params: Any, shape: torch.Size | None = None, **kwargs: Any) -> DiagLinearOperator:
        n = shape[-1] if shape is not None else params[0].shape[-2]
        if n != self.counts.shape[-1]:
            raise ValueError(f"ReplicateNoise is defined on the {self.counts.shape[-1]} training layers only; "
                             f"asked for {n} points")
        return DiagLinearOperator(self.noise / self.counts)


class ReplicateGaussianLikelihood(_GaussianLikelihoodBase):
    """Gaussian likelihood of the per-layer means: ybar_k ~ N(f_k, sigma^2 / n_k)."""

    def __init__(self, counts: torch.Tensor, noise_floor: float = NOISE_FLOOR) -> None:
        super().__init__(noise_covar=ReplicateNoise(counts, noise_floor))

    @property
    def noise(self) -> torch.Tensor:
        return self.noise_covar.noise

    @noise.setter
    def noise(self, value: float | torch.Tensor) -> None:
        self.noise_covar.noise = value


class PathGP(gpytorch.models.ExactGP):
    """Exact GP with a constant mean and a scaled RBF kernel on 1-D inputs."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, likelihood: gpytorch.likelihoods.Likelihood,
                 min_lengthscale: float | None = None) -> None:
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        bound = {} if min_lengthscale is None else {"lengthscale_constraint": GreaterThan(min_lengthscale)}
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(**bound))

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


@dataclass(frozen=True)
class _Summary:
    """Sufficient statistics of points grouped by layer: distinct layers, counts, means, scatters."""

    layers: np.ndarray  # (K,) float64, increasing
    counts: np.ndarray  # (K,) int64
    means: np.ndarray  # (K,)
    scatter: np.ndarray  # (K,) sum of squared deviations from the layer's mean


def _points(layers: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat (x, y) float64 points from ``layers (K,)`` with ``values (N, K)``, or both flat ``(P,)``."""
    x = np.asarray(layers)
    y = np.asarray(values)
    if x.dtype.kind not in "iuf" or y.dtype.kind not in "iuf":
        raise ValueError(f"layers and values must be real numbers; got dtypes {x.dtype} and {y.dtype}")
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    if x.ndim == 1 and y.ndim == 2 and y.shape[1] == x.shape[0]:
        x = np.broadcast_to(x, y.shape).reshape(-1)
        y = y.reshape(-1)
    elif not (x.ndim == 1 and y.ndim == 1 and x.shape == y.shape):
        raise ValueError(f"expected layers (K,) with values (N, K), or layers and values both (P,); got layers "
                         f"{x.shape} and values {y.shape}")
    if y.size == 0:
        raise ValueError("no points to aggregate: values is empty")
    if not np.isfinite(x).all():
        raise ValueError(f"layers contain {int((~np.isfinite(x)).sum())} NaN or infinite entries")
    bad = ~np.isfinite(y)
    if bad.any():
        raise ValueError(f"values contain {int(bad.sum())} NaN or infinite entries (first at layer "
                         f"{x[bad][0]:g}); drop or fix those inputs before aggregating")
    return x, y


def _summarize(x: np.ndarray, y: np.ndarray) -> _Summary:
    layers, index = np.unique(x, return_inverse=True)
    counts = np.bincount(index, minlength=layers.size)
    means = np.bincount(index, weights=y, minlength=layers.size) / counts
    scatter = np.bincount(index, weights=(y - means[index]) ** 2, minlength=layers.size)
    return _Summary(layers, counts.astype(np.int64), means, scatter)


def _build(x: np.ndarray, summary: _Summary, noise_floor: float) -> tuple[PathGP, ReplicateGaussianLikelihood]:
    counts = torch.as_tensor(summary.counts, dtype=_DTYPE)
    likelihood = ReplicateGaussianLikelihood(counts, noise_floor).to(_DTYPE)
    # The lengthscale stays above half the spacing of adjacent layers: a path is a function of the layer
    # index, and shorter lengthscales only interpolate noise (the curve between layers turns into spikes).
    gaps = np.diff(np.asarray(x, dtype=np.float64))
    min_lengthscale = MIN_LENGTHSCALE_GAPS * float(gaps.min()) if gaps.size else 1e-4
    model = PathGP(torch.as_tensor(x, dtype=_DTYPE), torch.as_tensor(summary.means, dtype=_DTYPE),
                    likelihood, min_lengthscale).to(_DTYPE)
    return model, likelihood


def _set_hyperparameters(model: PathGP, constant: float, lengthscale: float, outputscale: float,
                         noise: float) -> None:
    model.mean_module.constant = torch.as_tensor(constant, dtype=_DTYPE)
    model.covar_module.base_kernel.lengthscale = torch.as_tensor(lengthscale, dtype=_DTYPE)
    model.covar_module.outputscale = torch.as_tensor(outputscale, dtype=_DTYPE)
    model.likelihood.noise = noise


def _log_likelihood(model: PathGP, summary: _Summary, counts: torch.Tensor, scatter: torch.Tensor) -> torch.Tensor:
    """Exact log marginal likelihood of all the points: the GP on the means plus the within-layer term."""
    likelihood = model.likelihood
    output = model(*model.train_inputs)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    on_means = mll(output, model.train_targets) * summary.layers.size  # GPyTorch divides by the K targets
    sigma2 = likelihood.noise.squeeze()
    within = (-(counts - 1) / 2 * torch.log(2 * math.pi * sigma2) - 0.5 * torch.log(counts)
              - scatter / (2 * sigma2)).sum()
    return on_means + within


def _check_hyperparameters(**values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and (name == "constant" or value > 0)):
            raise ValueError(f"{name} must be {'finite' if name == 'constant' else 'positive and finite'}; "
                             f"got {value!r}")


def marginal_log_likelihood(layers: np.ndarray, values: np.ndarray, *, constant: float, lengthscale: float,
                            outputscale: float, noise: float) -> float:
    """Exact log marginal likelihood of all the points under the GP with these hyperparameters (in the
    units of ``layers`` and ``values``), computed from the per-layer sufficient statistics."""
    _check_hyperparameters(constant=constant, lengthscale=lengthscale, outputscale=outputscale, noise=noise)
    x, y = _points(layers, values)
    summary = _summarize(x, y)
    model, _ = _build(summary.layers, summary, noise_floor=0.0)
    _set_hyperparameters(model, constant, lengthscale, outputscale, noise)
    counts = torch.as_tensor(summary.counts, dtype=_DTYPE)
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(10 ** 6):
        return float(_log_likelihood(model, summary, counts, torch.as_tensor(summary.scatter, dtype=_DTYPE)))


def _posterior(model: PathGP, at: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    with torch.no_grad(), gpytorch.settings.debug(False), gpytorch.settings.max_cholesky_size(10 ** 6), \
            gpytorch.settings.fast_pred_var(False):
        f = model(at)
        return f.mean.numpy().copy(), f.variance.clamp_min(0).numpy().copy()


def latent_posterior(layers: np.ndarray, values: np.ndarray, at: np.ndarray, *, constant: float,
                     lengthscale: float, outputscale: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and variance of the latent f at the points ``at`` (1-D) given all the points, under
    the GP with these hyperparameters (in the units of ``layers`` and ``values``)."""
    _check_hyperparameters(constant=constant, lengthscale=lengthscale, outputscale=outputscale, noise=noise)
    x, y = _points(layers, values)
    summary = _summarize(x, y)
    model, _ = _build(summary.layers, summary, noise_floor=0.0)
    _set_hyperparameters(model, constant, lengthscale, outputscale, noise)
    return _posterior(model, torch.as_tensor(np.asarray(at, dtype=np.float64).reshape(-1), dtype=_DTYPE))


# ---------------------------------------------------------------------------------------------------------
# Fitting


def _grid(low: float, high: float, step: float) -> np.ndarray:
    if high == low:
        return np.array([low])
    count = math.ceil((high - low) / step - 1e-9) + 1
    return np.linspace(low, high, count)


def _starts(summary: _Summary, span: float, restarts: int, seed: int) -> list[tuple[float, float, float, float]]:
    """(constant, lengthscale, outputscale, noise) starting points in standardized units, x in [0, 1]."""
    spacing = 1.0 / max(summary.layers.size - 1, 1) if span > 0 else 1.0
    dof = int((summary.counts - 1).sum())
    pooled = float(summary.scatter.sum() / dof) if dof > 0 else 0.1
    noise = max(pooled, 10 * NOISE_FLOOR)
    outputscale = max(float(np.var(summary.means)), 0.01)
    starts = [(0.0, max(0.3, 2 * spacing), outputscale, noise)]
    generator = np.random.default_rng(seed)
    for _ in range(restarts - 1):
        lengthscale = float(np.exp(generator.uniform(math.log(spacing), math.log(2.0))))
        scale = float(np.exp(generator.uniform(math.log(0.1), math.log(10.0))))
        starts.append((0.0, lengthscale, outputscale * scale, noise))
    return starts


def _optimize(model: PathGP, summary: _Summary, max_iter: int) -> float:
    """Maximize the log marginal likelihood over the model's raw hyperparameters with SciPy's L-BFGS-B
    (torch gradients). SciPy rather than torch.optim: a torch optimizer's first construction imports
    torch._dynamo, about 2 s per job on a CPU, longer than the fit itself."""
    from scipy.optimize import minimize
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    counts = torch.as_tensor(summary.counts, dtype=_DTYPE)
    scatter = torch.as_tensor(summary.scatter, dtype=_DTYPE)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        with torch.no_grad():
            vector_to_parameters(torch.as_tensor(theta, dtype=_DTYPE), params)
        for p in params:
            p.grad = None
        loss = -_log_likelihood(model, summary, counts, scatter)
        loss.backward()
        grad = parameters_to_vector([p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
        return float(loss.detach()), grad.detach().numpy().astype(np.float64)

    start = parameters_to_vector(params).detach().numpy().astype(np.float64)
    result = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "gtol": 1e-9, "ftol": 1e-12, "maxcor": 20})
    with torch.no_grad():
        vector_to_parameters(torch.as_tensor(result.x, dtype=_DTYPE), params)
        return float(_log_likelihood(model, summary, counts, scatter))


def fit_path(layers: np.ndarray, values: np.ndarray, *, seed: int = 0, grid_step: float = 0.05,
             restarts: int = 2, max_iter: int = 100) -> AggregatedPath:
    """The GP aggregate of a set of paths: ``layers (K,)`` with ``values (N, K)`` (N inputs' paths), or
    flat points ``layers (P,)``, ``values (P,)``. Hyperparameters by maximum marginal likelihood (L-BFGS
    from ``restarts`` starts, the first deterministic, the others drawn with ``seed``); mean and 95 % band
    of f at each distinct layer and on a grid of step ``grid_step`` from the first to the last layer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer; got {seed!r}")
    if not (isinstance(grid_step, (int, float)) and math.isfinite(grid_step) and grid_step > 0):
        raise ValueError(f"grid_step must be a positive number; got {grid_step!r}")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be a positive integer; got {restarts!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}")
    x, y = _points(layers, values)
    raw = _summarize(x, y)
    low, high = float(raw.layers[0]), float(raw.layers[-1])
    grid = _grid(low, high, float(grid_step))

    if np.ptp(y) == 0:  # every point equal: the aggregate is that constant, exactly
        level = float(y[0])
        at_layers, at_grid = np.full(raw.layers.size, level), np.full(grid.size, level)
        return AggregatedPath(raw.layers, at_layers, at_layers.copy(), at_layers.copy(), grid, at_grid,
                              at_grid.copy(), at_grid.copy(), raw.counts,
                              {"constant": level, "lengthscale": math.nan, "outputscale": 0.0, "noise": 0.0,
                               "log_marginal_likelihood": math.inf})

    center, scale = float(y.mean()), float(y.std())
    span = high - low if high > low else 1.0
    summary = _Summary((raw.layers - low) / span, raw.counts, (raw.means - center) / scale,
                       raw.scatter / scale ** 2)

    best: tuple[float, dict[str, torch.Tensor]] | None = None
    with warnings.catch_warnings(), gpytorch.settings.max_cholesky_size(10 ** 6):
        warnings.simplefilter("ignore", gpytorch.utils.warnings.NumericalWarning)
        for start in _starts(summary, high - low, restarts, int(seed)):
            model, _ = _build(summary.layers, summary, NOISE_FLOOR)
            _set_hyperparameters(model, *start)
            try:
                value = _optimize(model, summary, max_iter)
            except (NanError, NotPSDError):  # this start ran into a degenerate kernel; the others decide
                continue
            if math.isfinite(value) and (best is None or value > best[0]):
                best = (value, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if best is None:
            raise ValueError("the GP fit failed: the marginal likelihood was not finite at any start")
        model, _ = _build(summary.layers, summary, NOISE_FLOOR)
        model.load_state_dict(best[1])
        at = torch.as_tensor(np.concatenate([summary.layers, (grid - low) / span]), dtype=_DTYPE)
        mean, variance = _posterior(model, at)

    mean = center + scale * mean
    with torch.no_grad():
        fitted = (float(model.mean_module.constant), float(model.covar_module.base_kernel.lengthscale),
                  float(model.covar_module.outputscale), float(model.likelihood.noise))
    half = Z95 * scale * np.sqrt(variance)
    k = raw.layers.size
    hyperparameters = {
        "constant": center + scale * fitted[0],
        "lengthscale": span * fitted[1],
        "outputscale": scale ** 2 * fitted[2],
        "noise": scale ** 2 * fitted[3],
        # Density of the original values: the standardized one less log(scale) per point.
        "log_marginal_likelihood": best[0] - y.size * math.log(scale),
    }
    return AggregatedPath(raw.layers, mean[:k], mean[:k] - half[:k], mean[:k] + half[:k], grid, mean[k:],
                          mean[k:] - half[k:], mean[k:] + half[k:], raw.counts, hyperparameters)


# ---------------------------------------------------------------------------------------------------------
# Sets of paths, files


def aggregate_frame(layers: np.ndarray, mu_s: np.ndarray, mu_t: np.ndarray, *, seed: int = 0,
                    grid_step: float = 0.05) -> dict[str, AggregatedPath]:
    """``{"iip": ..., "oip": ...}``: the aggregates of flat points ``(layer, mu_s)`` and ``(layer, mu_t)``,
    one row per (input, layer), e.g. the rows of one step of a trajectory set."""
    aggregated = {}
    for name, column, values in (("iip", "mu_s", mu_s), ("oip", "mu_t", mu_t)):
        values = np.asarray(values, dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"{column} has {int(bad.sum())} NaN or infinite value(s) (first at row "
                             f"{int(np.flatnonzero(bad)[0])}); the paths of those inputs are undefined")
        aggregated[name] = fit_path(layers, values, seed=seed, grid_step=grid_step)
    return aggregated


def aggregate_paths(paths_csv: str | Path, *, seed: int = 0, grid_step: float = 0.05, record: MIRecord | None = None
                    ) -> dict[str, AggregatedPath]:
    """``{"iip": ..., "oip": ...}``: the aggregates of all the inputs in a paths CSV. A trajectory CSV
    (with a ``step`` column) must hold a single step; group its rows by step and use
    :func:`aggregate_frame` otherwise. Given the MI file's ``record`` (:func:`advflow.information.paths.read_mi_record`),
    the CSV must hold its inputs and layers (a damaged CSV is moved aside, never aggregated)."""
    columns = read_paths_csv(paths_csv)
    if record is not None:
        input_paths(columns, Path(paths_csv), record=record)
    if "step" in columns and np.unique(columns["step"]).size > 1:
        raise ValueError(f"{paths_csv}: rows of {np.unique(columns['step']).size} steps; aggregate each step "
                         f"on its own (read_paths_csv, then aggregate_frame on each step's rows)")
    try:
        return aggregate_frame(columns["layer"], columns["mu_s"], columns["mu_t"], seed=seed, grid_step=grid_step)
    except ValueError as error:
        raise ValueError(f"{paths_csv}: {error}") from error


#: Fewest inputs a transferable / non-transferable subset needs to be aggregated.
MIN_SUBSET = 2


def transfer_masks(paths: InputPaths, success: np.ndarray, labels: np.ndarray, *, where: str = "the set"
                   ) -> dict[str, np.ndarray]:
    """Masks over the inputs of a set crafted on a target T and measured on a model M (``paths``, M's paths):
    ``transferable`` (successful on T and misclassified by M) and ``non_transferable`` (successful on T,
    classified correctly by M). ``success`` and ``labels`` are the set's own records, in input order."""
    success, labels = np.asarray(success, dtype=bool), np.asarray(labels, dtype=np.int64)
    if success.size != paths.inputs.size or not np.array_equal(paths.inputs, np.arange(success.size)):
        raise ValueError(f"{where}: the paths hold inputs {paths.inputs.tolist()[:10]}... but the adversarial set "
                         f"{success.size}; the two files are not of the same set (rerun the mi rule)")
    if not np.array_equal(paths.label, labels):
        raise ValueError(f"{where}: the paths' labels differ from the adversarial set's; the two files are not of "
                         f"the same set (rerun the mi rule)")
    fooled = paths.prediction != paths.label
    return {"transferable": success & fooled, "non_transferable": success & ~fooled}


def read_success(adversarial_h5: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(success, labels) of an adversarial set, checked: both one entry per input (a damaged set is moved aside)."""
    with open_h5(adversarial_h5) as h5:
        check_set(h5, adversarial_h5, required=("success", "labels"))
        return h5["success"][:], h5["labels"][:]


def read_transfer_masks(paths_csv: str | Path, adversarial_h5: str | Path) -> dict[str, np.ndarray]:
    """:func:`transfer_masks` of a paths CSV (the set measured on another model) and the set's HDF5 file."""
    success, labels = read_success(adversarial_h5)
    return transfer_masks(read_input_paths(paths_csv), success, labels, where=f"{paths_csv} and {adversarial_h5}")


def aggregate_subsets(paths_csv: str | Path, adversarial_h5: str | Path, *, seed: int = 0, grid_step: float = 0.05,
                      record: MIRecord | None = None) -> dict[str, tuple[int, dict[str, AggregatedPath]]]:
    """Q5: per subset of :func:`read_transfer_masks`, its size and the aggregates of its inputs' paths (empty
    below :data:`MIN_SUBSET` inputs). ``record``: as in :func:`aggregate_paths`."""
    paths = read_input_paths(paths_csv, record=record)
    success, labels = read_success(adversarial_h5)
    out = {}
    for subset, mask in transfer_masks(paths, success, labels, where=f"{paths_csv} and {adversarial_h5}").items():
        count, aggregated = int(mask.sum()), {}
        if count >= MIN_SUBSET:
            layers = np.tile(paths.layers, count)
            try:
                aggregated = aggregate_frame(layers, paths.mu_s[mask].reshape(-1), paths.mu_t[mask].reshape(-1),
                                             seed=seed, grid_step=grid_step)
            except (ValueError, RuntimeError) as error:
                raise RuntimeError(f"{paths_csv}: the GP fit of its {count} {subset} inputs failed (seed {seed}): "
                                   f"{error}") from error
        out[subset] = (count, aggregated)
    return out


def aggregated_distance(a: AggregatedPath, b: AggregatedPath) -> float:
    """(1/K) sum_k |mean_a^(k) - mean_b^(k)|: :func:`advflow.information.paths.path_distance` of the two aggregated
    paths' means at their layers, which must be the same."""
    if a.layers.shape != b.layers.shape or not np.array_equal(a.layers, b.layers):
        raise ValueError(f"aggregated paths must cover the same layers; got {a.layers.tolist()} and "
                         f"{b.layers.tolist()}")
    return float(path_distance(torch.as_tensor(a.mean), torch.as_tensor(b.mean)))


def aggregated_ioc(aggregated: Mapping[str, AggregatedPath]) -> np.ndarray:
    """The aggregated IOC: ``(K, 2)`` points (mean mu_s^(k), mean mu_t^(k)) from ``{"iip", "oip"}``."""
    iip, oip = aggregated["iip"], aggregated["oip"]
    if not np.array_equal(iip.layers, oip.layers):
        raise ValueError(f"iip and oip must cover the same layers; got {iip.layers.tolist()} and "
                         f"{oip.layers.tolist()}")
    return np.stack([iip.mean, oip.mean], axis=1)


def fit_flags(aggregated: AggregatedPath) -> list[str]:
    """Why a GP aggregate cannot carry information: its curve or band, lengthscale or likelihood is not
    finite (an all-equal set, e.g. OIPs identically 0, or a failed fit). Empty when the fit is usable."""
    flags = []
    if not all(np.isfinite(v).all() for v in (aggregated.mean, aggregated.lower, aggregated.upper)):
        flags.append("curve or band not finite")
    for name in ("lengthscale", "log_marginal_likelihood"):
        value = aggregated.hyperparameters.get(name)
        if value is not None and not math.isfinite(value):
            flags.append(f"{name.replace('_', ' ')} {value}")
    return flags


def write_aggregate(path: str | Path, aggregated: Mapping[str, AggregatedPath]) -> None:
    """Write aggregates as CSV ``path, layer, mean, lower, upper, at_layer`` (one row per layer with
    at_layer True, then one per grid point with False) followed by the fitted hyperparameters
    (:data:`FIT_FIELDS`, the same on every row of a path; NaN when not fitted), atomically."""
    unknown = sorted(set(aggregated) - set(PATH_NAMES))
    if unknown:
        raise ValueError(f"aggregate names must be among {', '.join(PATH_NAMES)}; got {', '.join(unknown)}")
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(_AGGREGATE_FIELDS)
        for name, agg in aggregated.items():
            fit = [repr(float(agg.hyperparameters.get(f, math.nan))) for f in FIT_FIELDS]
            for at_layer, xs, means, lows, highs in ((True, agg.layers, agg.mean, agg.lower, agg.upper),
                                                     (False, agg.grid, agg.grid_mean, agg.grid_lower,
                                                      agg.grid_upper)):
                for row in zip(xs, means, lows, highs):
                    writer.writerow([name, *(repr(float(v)) for v in row), at_layer, *fit])


def read_aggregate(path: str | Path, *, damaged: str = "quarantine") -> dict[str, AggregatedPath]:
    """Read a file of :func:`write_aggregate`: the curves, bands and fitted hyperparameters (no counts).

    A file that is not whole (a short or unreadable row, one path without the other, the two paths over different
    layers or grids: a file cut short) was damaged after its job wrote it; it is moved aside
    (:func:`advflow.workflow.io.quarantine`, or left in place with ``damaged="keep"``) and the next run aggregates again.
    A header alone is whole: a Q5 subset too small to aggregate."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; run the workflow stage that aggregates the paths")

    def broken(problem: str) -> Exception:
        if damaged == "quarantine":
            return quarantine(path, problem, rebuilt_by="rule aggregate (or aggregate_subsets)")
        return ValueError(f"{path}: {problem}")

    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != _AGGREGATE_FIELDS:
            raise broken(f"expected columns {', '.join(_AGGREGATE_FIELDS)}; got {', '.join(reader.fieldnames or [])}")
        rows: dict[str, dict[bool, list[list[float]]]] = {}
        fits: dict[str, dict[str, float]] = {}
        for number, row in enumerate(reader, start=2):
            if None in row.values() or None in row:
                raise broken(f"line {number} does not have one field per column (cut short?)")
            if row["path"] not in PATH_NAMES or row["at_layer"] not in ("True", "False"):
                raise broken(f"line {number}: path must be iip or oip and at_layer True or False; got "
                             f"{row['path']!r}, {row['at_layer']!r}")
            try:
                values = [float(row[c]) for c in ("layer", "mean", "lower", "upper")]
                fit = {f: float(row[f]) for f in FIT_FIELDS}
            except ValueError as error:
                raise broken(f"line {number}: {error}") from error
            rows.setdefault(row["path"], {True: [], False: []})[row["at_layer"] == "True"].append(values)
            fits.setdefault(row["path"], fit)
    if rows and set(rows) != set(PATH_NAMES):
        raise broken(f"only {', '.join(sorted(rows))} rows; an aggregate holds both {' and '.join(PATH_NAMES)} (cut short?)")
    if rows:
        layouts = {name: [[v[0] for v in parts[True]], [v[0] for v in parts[False]]] for name, parts in rows.items()}
        if len({repr(layout) for layout in layouts.values()}) > 1 or not layouts[PATH_NAMES[0]][0]:
            raise broken("the iip and oip rows cover different layers or grid points (cut short?)")
    aggregated = {}
    for name, parts in rows.items():
        at, on_grid = np.array(parts[True]).reshape(-1, 4), np.array(parts[False]).reshape(-1, 4)
        fit = fits[name] if not all(math.isnan(v) for v in fits[name].values()) else {}  # written unfitted
        aggregated[name] = AggregatedPath(*at.T, *on_grid.T, hyperparameters=fit)
    return aggregated
