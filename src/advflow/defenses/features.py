"""Layer activations of a classifier for the feature-space detectors (Mahalanobis, LID; docs/method.md, "Defenses and
detectors", "Published baselines").

:func:`layer_features` runs model-space images ``(N, C, H, W)`` through the classifier in batches, on its device, in
eval mode (its mode is restored), and records each chosen layer's output ``(N, n_k, H_k, W_k)`` with forward hooks,
as :func:`advflow.api.conv_layer_maps` does. The default layers are :func:`advflow.models.layers.default_layers`
(an advflow ConvNet's conv blocks ``conv1 .. convK``; for any other model each conv with what directly follows it,
each residual block's output). :func:`channel_means` averages maps over space, as Lee et al.'s reference code does
(``torch.mean(out.view(N, C, -1), 2)``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from advflow.defenses import Detector
from advflow.models.layers import capture_maps, default_layers


def resolve_layers(classifier: nn.Module, example: torch.Tensor,
                   layers: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(layer names, module names in ``classifier.named_modules()``) of the layers to record. ``layers``: module
    names (then both lists are ``layers``); None: :func:`default_layers`, traced on ``example`` (its first image)."""
    if layers is None:
        device = _device(classifier, example)
        choice = default_layers(classifier, torch.as_tensor(example)[:1].to(device))
        return list(choice.names), list(choice.module_names)
    if isinstance(layers, str) or not len(layers):
        raise ValueError(f"layers must be a non-empty list of module names; got {layers!r}")
    modules = dict(classifier.named_modules())
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise ValueError(f"no module named {', '.join(map(repr, unknown))} in {type(classifier).__name__}; names are "
                         f"those of classifier.named_modules(), e.g. {', '.join(list(modules)[1:6])}")
    return list(layers), list(layers)


def _device(classifier: nn.Module, x: torch.Tensor) -> torch.device:
    parameter = next(classifier.parameters(), None)
    return parameter.device if parameter is not None else torch.as_tensor(x).device


def batch_maps(classifier: nn.Module, x: torch.Tensor, layers: Sequence[str], module_names: Sequence[str], *,
               batch_size: int = 256) -> Iterator[dict[str, torch.Tensor]]:
    """Per batch of ``x``, ``{layer name: maps (B, n_k, H_k, W_k)}`` on the classifier's device (detached), in layer
    order. Hooks and eval mode hold during each batch's forward pass only, so a consumer may stop at any batch."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    modules = dict(classifier.named_modules())
    missing = [name for name in module_names if name not in modules]
    if missing:
        raise ValueError(f"{type(classifier).__name__} has no module {', '.join(map(repr, missing))}")
    x = torch.as_tensor(x)
    device = _device(classifier, x)
    parameter = next((p for p in classifier.parameters() if p.is_floating_point()), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    chosen = [(name, modules[module]) for name, module in zip(layers, module_names)]
    for start in range(0, x.shape[0], batch_size):
        captured = capture_maps(classifier, x[start:start + batch_size].to(device, dtype), chosen)
        yield {name: captured[name] for name in layers}


def differentiable_maps(classifier: nn.Module, x: torch.Tensor, layers: Sequence[str],
                        module_names: Sequence[str]) -> dict[str, torch.Tensor]:
    """``{layer name: maps (N, n_k, H_k, W_k)}`` of ``x`` as :func:`batch_maps` records them, but in one forward pass
    that keeps the graph: the maps are differentiable with respect to ``x`` (moved to the classifier's device and
    dtype). The classifier runs in eval mode (its mode restored); a module that runs twice or not at all, or does not
    output maps, is a ValueError, as in :func:`capture_maps`."""
    modules = dict(classifier.named_modules())
    missing = [name for name in module_names if name not in modules]
    if missing:
        raise ValueError(f"{type(classifier).__name__} has no module {', '.join(map(repr, missing))}")
    parameter = next((p for p in classifier.parameters() if p.is_floating_point()), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    chosen = [(name, modules[module]) for name, module in zip(layers, module_names)]
    captured = capture_maps(classifier, torch.as_tensor(x).to(_device(classifier, x), dtype), chosen, grad=True)
    return {name: captured[name] for name in layers}


def layer_features(classifier: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None,
                   batch_size: int = 256) -> dict[str, np.ndarray]:
    """Each recorded layer's activations ``(N, n_k, H_k, W_k)`` (float32 NumPy) for images ``x (N, C, H, W)`` in
    model space, keyed by layer name in forward order. ``layers``: module names (default :func:`default_layers`)."""
    x = torch.as_tensor(x)
    names, module_names = resolve_layers(classifier, x, layers)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for maps in batch_maps(classifier, x, names, module_names, batch_size=batch_size):
        for name, value in maps.items():
            parts[name].append(value.float().cpu().numpy())
    return {name: np.concatenate(value) if value else np.zeros((0, 0, 0, 0), np.float32)
            for name, value in parts.items()}


def channel_means(maps: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(N, n_k)`` float64 average over space of maps ``(N, n_k, H_k, W_k)`` (NumPy or torch)."""
    if not isinstance(maps, torch.Tensor):
        maps = np.asarray(maps)
    if maps.ndim != 4:
        raise ValueError(f"channel_means takes maps (N, n, H, W); got shape {tuple(maps.shape)}")
    if isinstance(maps, torch.Tensor):  # averaged where the maps are (the device), then brought back
        return maps.detach().double().mean(dim=(2, 3)).cpu().numpy()
    return np.asarray(maps, dtype=np.float64).mean(axis=(2, 3))


class LayerScoreDetector(Detector):
    """What the Mahalanobis and LID detectors share: a classifier and its recorded layers, one score per layer
    (:meth:`layer_scores`, ``(N, L)``) and the unsupervised combination :meth:`score`.

    **Combination.** The reference codes of both detectors weight the layers with a logistic regression trained on
    adversarial examples of the attack they are tested on (a *supervised* detector, kept apart: docs/method.md).
    Fitted on clean data only, nothing tells which layer matters more, so each layer's score is put on the clean
    scale, ``z_l = (s_l - mean_l) / std_l`` with the mean and (population) std of the layer's scores on the clean
    fit inputs (std 0 counts as 1), and the z are summed with equal weights: an input that is unusual in any layer
    scores high, and no layer dominates by its units. Higher = more suspicious in every layer, so the sum is too.

    Subclasses implement ``_fit_layers(x, labels) -> (N, L) clean scores`` and ``_layer_scores(x) -> (N, L)``, and
    name their fitted tensors in ``_STATE`` (added to the shared keys of :meth:`state_dict`); for
    :meth:`differentiable_score`, ``_torch_layer_scores(x)``: the same ``(N, L)`` float64 tensor, differentiable, from
    :meth:`differentiable_maps`.
    """

    _STATE: tuple[str, ...] = ()
    _SHARED = ("detector", "layers", "modules", "input_shape", "score_mean", "score_std")

    def __init__(self, classifier: nn.Module, layers: Sequence[str] | None = None, *, batch_size: int = 256) -> None:
        if not isinstance(classifier, nn.Module):
            raise TypeError(f"{self.name} needs the classifier as a torch.nn.Module; got {type(classifier).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        if layers is not None:
            resolve_layers(classifier, torch.zeros(0), layers)  # names checked now, not at fit
        self.classifier, self.layers, self.batch_size = classifier, None if layers is None else list(layers), batch_size
        self.layer_names: list[str] | None = None  # after fit / load: the recorded layers and their modules
        self.module_names: list[str] | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.score_mean: torch.Tensor | None = None  # (L,) float64: the clean fit inputs' layer scores
        self.score_std: torch.Tensor | None = None

    # -- inputs and maps

    def _check(self, x: Any, fitting: bool = False) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
            raise ValueError(f"{self.name} expects a float tensor of images (N, C, H, W) in model space [-1, 1]; got "
                             f"{type(x).__name__} {getattr(x, 'dtype', '')} of shape {tuple(getattr(x, 'shape', ()))}")
        if not fitting:
            self._fitted()
            if tuple(x.shape[1:]) != self.input_shape:
                raise ValueError(f"{self.name} was fitted on images of shape {self.input_shape}; got "
                                 f"{tuple(x.shape[1:])}")
        if x.numel() and not (torch.isfinite(x).all() and x.min() >= -1.0 - 1e-4 and x.max() <= 1.0 + 1e-4):
            raise ValueError(f"{self.name} expects finite images in model space [-1, 1] (advflow.data.to_model_space); "
                             f"got values in [{float(x.min()):.4g}, {float(x.max()):.4g}]")
        return x

    def _fitted(self) -> None:
        if self.layer_names is None or self.score_mean is None:
            raise RuntimeError(f"{self.name} is not fitted: call fit(clean training images) or load_state_dict first")

    def maps(self, x: torch.Tensor) -> Iterator[dict[str, torch.Tensor]]:
        """Per batch, ``{layer: maps}`` on the classifier's device (:func:`batch_maps`) of the fitted layers."""
        return batch_maps(self.classifier, x, self.layer_names, self.module_names, batch_size=self.batch_size)

    def differentiable_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{layer: maps}`` of the fitted layers with their graph (:func:`differentiable_maps`), one forward pass."""
        return differentiable_maps(self.classifier, x, self.layer_names, self.module_names)

    # -- fit and scores

    def _start_fit(self, x: Any) -> torch.Tensor:
        x = self._check(x, fitting=True)
        if x.shape[0] < 2:
            raise ValueError(f"{self.name} needs at least 2 clean training images; got {x.shape[0]}")
        self.layer_names, self.module_names = resolve_layers(self.classifier, x, self.layers)
        self.input_shape = tuple(int(v) for v in x.shape[1:])
        return x

    def _set_scale(self, clean: np.ndarray) -> None:
        std = clean.std(axis=0)
        self.score_mean = torch.as_tensor(clean.mean(axis=0), dtype=torch.float64)
        self.score_std = torch.as_tensor(np.where(std > 0, std, 1.0), dtype=torch.float64)

    def layer_scores(self, x: torch.Tensor) -> np.ndarray:
        """``(N, L)`` float64 per-layer scores of images ``x (N, C, H, W)``, layers in :attr:`layer_names` order."""
        x = self._check(x)
        if x.shape[0] == 0:
            return np.zeros((0, len(self.layer_names)))
        return self._layer_scores(x)

    def _layer_scores(self, x: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def _torch_layer_scores(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"detector {self.name} has no differentiable layer scores")

    def score(self, x: torch.Tensor) -> np.ndarray:
        """``(N,)`` float64: the layers' scores standardized on the clean fit data and summed (class docstring)."""
        return self.scores_and_layers(x)[0]

    def differentiable_score(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`score` as an ``(N,)`` float64 tensor on the classifier's device, with its graph through the recorded
        layers (``_torch_layer_scores(x) -> (N, L)``, the torch version of ``_layer_scores``)."""
        x = self._check(x)
        if x.shape[0] == 0:
            return torch.zeros(0, dtype=torch.float64, device=_device(self.classifier, x))
        scores = self._torch_layer_scores(x)
        return ((scores - self.score_mean.to(scores.device)) / self.score_std.to(scores.device)).sum(dim=1)

    def scores_and_layers(self, x: torch.Tensor) -> tuple[np.ndarray, list[str], np.ndarray]:
        """:meth:`score` and the per-layer scores it sums (layer names, ``(N, L)``), computed once: the scoring jobs
        store both (the supervised combination reads the per-layer scores, as the reference codes do)."""
        scores = self.layer_scores(x)
        return ((scores - self.score_mean.numpy()) / self.score_std.numpy()).sum(axis=1), list(self.layer_names), scores

    # -- state

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The fitted state: tensors, and the names of the layers and their modules as plain strings (loadable with
        ``torch.load(..., weights_only=True)``; NumPy arrays are not, so none is kept). The classifier is not in it:
        it is saved by its own stage and given to the constructor again."""
        self._fitted()
        return {"detector": self.name, "layers": list(self.layer_names), "modules": list(self.module_names),
                "input_shape": list(self.input_shape), "score_mean": self.score_mean.clone(),
                "score_std": self.score_std.clone(), **self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a fitted state; a foreign or incomplete one is a ValueError naming what is wrong."""
        if not isinstance(state, dict):
            raise ValueError(f"a {self.name} state is a dict; got {type(state).__name__}")
        expected = {*self._SHARED, *self._STATE}
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        if state.get("detector", self.name) != self.name:
            raise ValueError(f"not a {self.name} state: it is the state of detector {state['detector']!r}")
        if missing or extra:
            raise ValueError(f"not a complete {self.name} state: missing keys {missing}"
                             + (f", unknown keys {extra}" if extra else ""))
        layers, modules = list(state["layers"]), list(state["modules"])
        if self.layers is not None and self.layers != modules:
            raise ValueError(f"{self.name} was built with layers {self.layers}; the state was fitted on {modules}")
        resolve_layers(self.classifier, torch.zeros(0), modules)  # the classifier has those modules
        mean, std = (torch.as_tensor(state[key], dtype=torch.float64).clone() for key in ("score_mean", "score_std"))
        if len(layers) != len(modules) or mean.shape != (len(layers),) or std.shape != (len(layers),):
            raise ValueError(f"a {self.name} state's layers, modules, score_mean and score_std must have one entry per "
                             f"layer; got {len(layers)}, {len(modules)}, {tuple(mean.shape)} and {tuple(std.shape)}")
        self._load(state)
        self.layer_names, self.module_names = layers, modules
        self.input_shape = tuple(int(v) for v in state["input_shape"])
        self.score_mean, self.score_std = mean, std
