"""The LID detector (Ma, Li, Wang, Erfani, Wijewickrema, Schoenebeck, Song, Houle & Bailey, ICLR 2018,
"Characterizing Adversarial Subspaces Using Local Intrinsic Dimensionality"; docs/method.md, "Defenses and
detectors", "Published baselines").

For each recorded layer l (:func:`advflow.defenses.features.layer_features`; default the conv layers of
:func:`advflow.models.layers.default_layers`), an input's activation a_l(x) is its maps, flattened. Its layer
score is the maximum-likelihood estimate of the local intrinsic dimensionality among clean reference activations,

    LID_l(x) = -( (1/k) sum_{i=1..k} log(r_i(x) / r_k(x)) )^{-1},

r_i the Euclidean distance from a_l(x) to its i-th nearest reference activation, k = 20 (Ma et al.). Adversarial
inputs tend to lie in regions of higher LID; higher = more suspicious.

**References.** Ma et al. estimate each input within its minibatch of 100, against the clean inputs of that batch
(and, in their code, the adversarial batch against the clean one). Here every input is estimated against one fixed
set of ``references`` (100, as Ma et al.'s batches) clean training activations drawn once at fit (seeded): the same
reference for every input, so the scores of different sets (clean validation, each attack, each random control)
compare, and an input's score does not depend on which inputs share its batch.

**Fit.** The clean scale of each layer (:class:`advflow.defenses.features.LayerScoreDetector`: standardized on the
clean fit data, summed with equal weights) comes from the LID of every clean fit input against the references; a fit
input that is itself a reference is not matched with itself (its distance 0 is left out, its k neighbours are among
the other references). Ma et al.'s code instead always drops each row's nearest neighbour; an input to
:meth:`LIDDetector.score` is matched with every reference, as it is not one of them.

Degenerate cases (duplicates): a zero distance among the k gives log 0 = -inf, so LID = 0; all k at distance 0
(r_k = 0) gives LID = 0 too; k equal positive distances (mean log 0) give a finite, very large LID (1e12).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from advflow.defenses.features import LayerScoreDetector

#: The mean log ratio is capped just below 0, so k equal positive distances give LID 1e12, not infinity.
_MAX_MEAN_LOG = -1e-12


def lid_mle(distances: torch.Tensor, k: int) -> torch.Tensor:
    """``(N,)`` float64 MLE of LID from the distances ``(N, R)`` of N points to R references (R >= k), with the k
    nearest; an infinite distance is never among them while R - (infinite entries) >= k. Degenerate cases: module
    docstring."""
    r = torch.topk(distances.double(), k, dim=1, largest=False, sorted=True).values  # (N, k) ascending
    r_k = r[:, -1:]
    mean_log = torch.log(r / r_k).mean(dim=1).clamp(max=_MAX_MEAN_LOG)  # r_i = 0: -inf -> LID 0; r_k = 0: NaN
    lid = -1.0 / mean_log
    return torch.where(r_k[:, 0] > 0, lid, torch.zeros_like(lid))


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, R)`` Euclidean distances of rows ``a (N, D)`` and ``b (R, D)``, float64."""
    return torch.cdist(a.double(), b.double())


class LIDDetector(LayerScoreDetector):
    """Ma et al.'s LID detector, unsupervised, against a fixed clean reference set (module docstring).
    ``classifier``: model-space images ``(N, C, H, W)`` -> logits, run in eval mode on its own device; ``layers``:
    module names of the layers to record (default :func:`advflow.models.layers.default_layers`); ``k``
    neighbours among ``references`` clean training activations, drawn with ``seed``. State: :meth:`state_dict`."""

    name = "lid"
    adaptive_surrogate = "exact"
    _STATE = ("k", "references")

    def __init__(self, classifier: nn.Module, layers: Sequence[str] | None = None, *, k: int = 20,
                 references: int = 100, seed: int = 0, batch_size: int = 256) -> None:
        for label, value in (("k", k), ("references", references)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer; got {value!r}")
        if references < k + 1:
            raise ValueError(f"LID needs more references than neighbours: references ({references}) >= k + 1 "
                             f"({k + 1}), so a reference input has k neighbours besides itself")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer; got {seed!r}")
        super().__init__(classifier, layers, batch_size=batch_size)
        self.k, self.references, self.seed = k, references, seed
        self.reference_activations: list[torch.Tensor] = []  # per layer (R, D_l) float32 on the CPU
        self.reference_index: np.ndarray | None = None  # which fit images are the references (not in the state)

    def _flat(self, x: torch.Tensor):
        for maps in self.maps(x):
            yield [maps[name].flatten(1) for name in self.layer_names]

    def fit(self, x: torch.Tensor, labels: Any = None) -> LIDDetector:
        """Draw ``references`` of the clean training images ``x (N, C, H, W)`` (labels are not used), keep their
        activations, and the clean scale of each layer's LID over all of ``x`` (a reference not matched with
        itself)."""
        x = self._start_fit(x)
        if x.shape[0] < self.references:
            raise ValueError(f"{self.name} needs at least references = {self.references} clean training images; got "
                             f"{x.shape[0]} (lower references or give more images)")
        chosen = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(self.seed))[:self.references]
        parts: list[list[torch.Tensor]] = [[] for _ in self.layer_names]
        for flat in self._flat(x[chosen]):
            for part, a in zip(parts, flat):
                part.append(a.float().cpu())
        self.reference_activations = [torch.cat(part) for part in parts]
        self.reference_index = chosen.numpy().copy()
        position = torch.full((x.shape[0],), -1, dtype=torch.long)
        position[chosen] = torch.arange(self.references)
        self._set_scale(self._lid(x, position))
        return self

    def _lid(self, x: torch.Tensor, position: torch.Tensor | None = None) -> np.ndarray:
        """``(N, L)`` LID of images ``x``; ``position[i]``: the reference that image i is (-1: none), left out."""
        references: list[torch.Tensor] | None = None
        rows, start = [], 0
        for flat in self._flat(x):
            if references is None:  # on the activations' device, once
                references = [r.to(a.device) for r, a in zip(self.reference_activations, flat)]
            n = flat[0].shape[0]
            own = None if position is None else position[start:start + n]
            columns = []
            for a, ref in zip(flat, references):
                distances = _distances(a, ref)
                if own is not None and (own >= 0).any():
                    mine = (own >= 0).nonzero().flatten()
                    distances[mine.to(distances.device), own[mine].to(distances.device)] = float("inf")
                columns.append(lid_mle(distances, self.k).cpu())
            rows.append(torch.stack(columns, dim=1))
            start += n
        return torch.cat(rows).numpy()

    def _layer_scores(self, x: torch.Tensor) -> np.ndarray:
        """Per layer, the LID of each input among the reference activations (k nearest)."""
        return self._lid(x)

    def _torch_layer_scores(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_layer_scores` as an ``(N, L)`` float64 tensor, differentiable: the same :func:`lid_mle` of the
        distances to every reference (none left out); the gradient flows through the k nearest (``topk``)."""
        maps, columns = self.differentiable_maps(x), []
        for name, references in zip(self.layer_names, self.reference_activations):
            a = maps[name].flatten(1)
            columns.append(lid_mle(_distances(a, references.to(a.device)), self.k))
        return torch.stack(columns, dim=1)

    def _state(self) -> dict[str, Any]:
        return {"k": self.k, "references": [r.clone() for r in self.reference_activations]}

    def _load(self, state: dict[str, Any]) -> None:
        k = state["k"]
        references = [torch.as_tensor(r).float().cpu().clone() for r in state["references"]]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"a {self.name} state's k must be a positive integer; got {k!r}")
        if (len(references) != len(state["layers"]) or any(r.ndim != 2 or r.shape[0] < k + 1 for r in references)
                or len({r.shape[0] for r in references}) > 1):
            raise ValueError(f"a {self.name} state needs, per layer, R >= k + 1 = {k + 1} reference activations "
                             f"(R, D); got {[tuple(r.shape) for r in references]} for {len(state['layers'])} layers")
        self.k, self.references, self.reference_activations = k, references[0].shape[0], references
        self.reference_index = None
