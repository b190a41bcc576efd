"""The Mahalanobis detector (Lee, Lee, Lee & Shin, NeurIPS 2018, "A Simple Unified Framework for Detecting
Out-of-Distribution Samples and Adversarial Attacks"; docs/method.md, "Defenses and detectors", "Published baselines").

For each recorded layer l (:func:`advflow.defenses.features.layer_features`; default the conv layers of
:func:`advflow.models.layers.default_layers`), an input's feature is its maps' **channel means** f_l(x)
``(n_l,)`` (the reference code's average over space). Fitted on clean training images and their labels:

- the class means mu_{l,c} of the features of the images of class c;
- **one shared covariance** Sigma_l of the class-centred features f_l(x_i) - mu_{l,y_i} (the maximum-likelihood
  estimate, divided by N, as the reference's ``sklearn.covariance.EmpiricalCovariance`` on centred features), and
  its inverse as the reference takes it: the **pseudo-inverse** ``scipy.linalg.pinvh`` (what ``EmpiricalCovariance``
  uses for its ``precision_``), so a singular covariance (a channel that is constant on clean data, e.g. a dead
  ReLU) works: directions of zero clean variance get no weight, no ridge is added.

The layer score is the squared Mahalanobis distance to the closest class mean,
``s_l(x) = min_c (f_l(x) - mu_{l,c})^T Sigma_l^+ (f_l(x) - mu_{l,c})`` (Lee et al.'s M(x) up to its sign: higher =
more suspicious). :meth:`MahalanobisDetector.score` is the unsupervised combination of the layers
(:class:`advflow.defenses.features.LayerScoreDetector`: standardized on the clean fit data, summed); the reference's
logistic regression trained on adversarial examples is the supervised variant, not this.

Lee et al.'s **input pre-processing** (moving x by epsilon against the gradient of its closest-class distance before
scoring, epsilon chosen with adversarial validation data) is not done: its epsilon is tuned with adversarial examples,
a supervised step, and this detector is fitted on clean data only.

The standardization uses the fit images' own scores (in-sample: the means and covariance were estimated on them, so
they score a little lower than fresh clean images); it only scales the layers against each other, and every
threshold is still set on clean validation images (:func:`advflow.defenses.threshold`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg
import torch
from torch import nn

from advflow.defenses.features import LayerScoreDetector, channel_means


def closest_class_distance(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """``(N,)`` min over classes c of ``(f - mu_c)^T P (f - mu_c)`` for features ``(N, n)``, class means ``(C, n)``
    and a precision matrix ``P (n, n)``; float64, clipped at 0 (rounding of a positive semi-definite form)."""
    diff = features[:, None, :] - means[None, :, :]  # (N, C, n)
    quadratic = np.einsum("bcn,nm,bcm->bc", diff, precision, diff, optimize=True)
    return np.clip(quadratic.min(axis=1), 0.0, None)


class MahalanobisDetector(LayerScoreDetector):
    """Lee et al.'s Mahalanobis detector, unsupervised (module docstring). ``classifier``: model-space images
    ``(N, C, H, W)`` -> logits, run in eval mode on its own device; ``layers``: module names of the layers to record
    (default: :func:`advflow.models.layers.default_layers`). State: :meth:`state_dict`."""

    name = "mahalanobis"
    adaptive_surrogate = "exact"
    _STATE = ("classes", "means", "precisions")

    def __init__(self, classifier: nn.Module, layers: Sequence[str] | None = None, *, batch_size: int = 256) -> None:
        super().__init__(classifier, layers, batch_size=batch_size)
        self.classes: np.ndarray | None = None  # (C,) int64
        self.means: list[np.ndarray] = []  # per layer (C, n_l) float64
        self.precisions: list[np.ndarray] = []  # per layer (n_l, n_l) float64

    def features(self, x: torch.Tensor) -> list[np.ndarray]:
        """Per layer, the channel means ``(N, n_l)`` float64 of images ``x``."""
        parts: list[list[np.ndarray]] = [[] for _ in self.layer_names]
        for maps in self.maps(x):
            for part, name in zip(parts, self.layer_names):
                part.append(channel_means(maps[name]))
        return [np.concatenate(part) for part in parts]

    def fit(self, x: torch.Tensor, labels: Any) -> MahalanobisDetector:
        """Class means and the shared covariance of clean training images ``x (N, C, H, W)`` with their true labels
        ``(N,)``, per layer; then the clean scale of each layer's score."""
        x = self._start_fit(x)
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if labels.shape != (x.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{self.name} needs one integer label per image: {x.shape[0]} labels; got dtype "
                             f"{labels.dtype} and shape {labels.shape}")
        classes, which = np.unique(labels.astype(np.int64), return_inverse=True)
        means, precisions = [], []
        features = self.features(x)
        for f in features:
            mu = np.stack([f[which == c].mean(axis=0) for c in range(len(classes))])
            centred = f - mu[which]
            covariance = centred.T @ centred / f.shape[0]
            means.append(mu)
            precisions.append(scipy.linalg.pinvh(covariance))
        self.classes, self.means, self.precisions = classes, means, precisions
        self._set_scale(self._from_features(features))
        return self

    def _from_features(self, features: list[np.ndarray]) -> np.ndarray:
        return np.stack([closest_class_distance(f, mu, p) for f, mu, p in zip(features, self.means, self.precisions)],
                        axis=1)

    def _layer_scores(self, x: torch.Tensor) -> np.ndarray:
        """Per layer, the squared Mahalanobis distance to the closest class mean."""
        return self._from_features(self.features(x))

    def _torch_layer_scores(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_layer_scores` as an ``(N, L)`` float64 tensor, differentiable: channel means of the maps, then
        :func:`closest_class_distance` in torch (the min picks the closest class; the clip at 0 is kept)."""
        maps, columns = self.differentiable_maps(x), []
        for name, means, precision in zip(self.layer_names, self.means, self.precisions):
            features = maps[name].double().mean(dim=(2, 3))
            diff = features[:, None, :] - torch.as_tensor(means, device=features.device)[None, :, :]
            quadratic = torch.einsum("bcn,nm,bcm->bc", diff, torch.as_tensor(precision, device=features.device), diff)
            columns.append(quadratic.min(dim=1).values.clamp(min=0.0))
        return torch.stack(columns, dim=1)

    def _state(self) -> dict[str, Any]:
        return {"classes": torch.as_tensor(self.classes, dtype=torch.int64).clone(),
                "means": [torch.as_tensor(m).clone() for m in self.means],
                "precisions": [torch.as_tensor(p).clone() for p in self.precisions]}

    def _load(self, state: dict[str, Any]) -> None:
        classes = torch.as_tensor(state["classes"]).numpy().astype(np.int64)
        means = [torch.as_tensor(m, dtype=torch.float64).numpy().copy() for m in state["means"]]
        precisions = [torch.as_tensor(p, dtype=torch.float64).numpy().copy() for p in state["precisions"]]
        layers = len(state["layers"])
        if (len(means) != layers or len(precisions) != layers
                or any(m.ndim != 2 or m.shape[0] != len(classes) or p.shape != (m.shape[1], m.shape[1])
                       for m, p in zip(means, precisions))):
            raise ValueError(f"a {self.name} state needs, per layer, class means (C, n) and a precision (n, n), "
                             f"C = {len(classes)} classes; got means {[m.shape for m in means]} and precisions "
                             f"{[p.shape for p in precisions]} for {layers} layers")
        self.classes, self.means, self.precisions = classes, means, precisions
