"""The Mahalanobis (Lee et al. 2018) and LID (Ma et al. 2018) detectors and the layer features they read
(advflow.defenses.features, .mahalanobis, .lid): exact against direct NumPy computations on small cases, and
behaviour on synthetic images with a planted shift. A tiny random conv net on 16x16 images; a few seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advflow.defenses import threshold
from advflow.defenses.features import channel_means, layer_features
from advflow.defenses.lid import LIDDetector
from advflow.defenses.mahalanobis import MahalanobisDetector
from advflow.defenses.metrics import roc_auc
from advflow.models.architectures import ConvNet, architecture

CLASSES, SIZE = 3, 16


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Dropout(0.5), nn.Linear(8 * 4 * 4, CLASSES))


class Images:
    """Model-space images: a class template plus noise (clean), or clean ones with a fixed strong pattern added
    (the planted shift)."""

    def __init__(self, seed: int = 1) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.templates = torch.rand(CLASSES, 1, SIZE, SIZE, generator=self.generator) - 0.5
        self.pattern = 0.6 * torch.sign(torch.randn(1, 1, SIZE, SIZE, generator=self.generator))

    def clean(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, CLASSES, (n,), generator=self.generator)
        noise = 0.15 * torch.randn(n, 1, SIZE, SIZE, generator=self.generator)
        return (self.templates[labels] + noise).clamp(-1, 1), labels

    def shifted(self, n: int) -> torch.Tensor:
        return (self.clean(n)[0] + self.pattern).clamp(-1, 1)


@pytest.fixture(scope="module")
def net() -> nn.Module:
    return tiny_net()


@pytest.fixture(scope="module")
def sets() -> dict[str, torch.Tensor]:
    images = Images()
    fit_x, fit_y = images.clean(600)
    return {"fit": fit_x, "fit_labels": fit_y, "validation": images.clean(400)[0], "test": images.clean(400)[0],
            "shifted": images.shifted(400)}


@pytest.fixture(scope="module")
def detectors(net, sets) -> dict[str, object]:
    return {"mahalanobis": MahalanobisDetector(net, batch_size=128).fit(sets["fit"], sets["fit_labels"]),
            "lid": LIDDetector(net, batch_size=128).fit(sets["fit"])}


def direct_maps(net: nn.Module, x: torch.Tensor, modules: list[str]) -> dict[str, np.ndarray]:
    found = dict(net.named_modules())
    out = {}
    handles = [found[m].register_forward_hook(lambda mod, i, o, m=m: out.__setitem__(m, o.detach().numpy()))
               for m in modules]
    try:
        with torch.no_grad():
            net.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return out


def test_layer_features_record_the_default_layers_in_eval_mode_in_batches(net, sets):
    x = sets["fit"][:50]
    net.train()
    maps = layer_features(net, x, batch_size=7)
    assert net.training  # its mode is restored
    assert list(maps) == ["2", "5"]  # the pool after each conv + ReLU (advflow.models.layers.default_layers)
    assert [m.shape for m in maps.values()] == [(50, 4, 8, 8), (50, 8, 4, 4)]
    direct = direct_maps(net, x, ["2", "5"])
    net.train()
    for name in maps:
        np.testing.assert_allclose(maps[name], direct[name], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(channel_means(maps["5"]), direct["5"].astype(np.float64).mean(axis=(2, 3)),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(channel_means(torch.as_tensor(maps["5"])), channel_means(maps["5"]), rtol=1e-12)
    assert list(layer_features(net, x[:3], layers=["1"])) == ["1"]
    with pytest.raises(ValueError, match="no module named 'nope'"):
        layer_features(net, x[:3], layers=["nope"])


def test_an_advflow_convnet_is_recorded_at_its_conv_blocks():
    torch.manual_seed(0)
    convnet = ConvNet(architecture("deep_conv", 1, (12, 12), 4)).train()
    x = torch.rand(30, 1, 12, 12) * 2 - 1
    maps = layer_features(convnet, x, batch_size=16)
    assert list(maps) == [f"conv{i}" for i in range(1, 7)] and convnet.training
    detector = LIDDetector(convnet, k=5, references=20).fit(x)
    assert detector.layer_names == list(maps) and detector.module_names[0] != "conv1"
    assert detector.layer_scores(x[:4]).shape == (4, 6)


def test_mahalanobis_layer_scores_equal_a_direct_numpy_computation(net, sets, detectors):
    detector = detectors["mahalanobis"]
    fit = layer_features(net, sets["fit"])
    fresh = layer_features(net, sets["test"][:50])
    labels = sets["fit_labels"].numpy()
    expected, clean = [], []
    for name in detector.layer_names:
        f = channel_means(fit[name])
        means = np.stack([f[labels == c].mean(axis=0) for c in range(CLASSES)])
        centred = f - means[labels]
        precision = np.linalg.pinv(centred.T @ centred / len(f), hermitian=True)

        def closest(g: np.ndarray) -> np.ndarray:
            return np.array([min((v - m) @ precision @ (v - m) for m in means) for v in g])

        expected.append(closest(channel_means(fresh[name])))
        clean.append(closest(f))
    np.testing.assert_allclose(detector.layer_scores(sets["test"][:50]), np.stack(expected, axis=1), rtol=1e-6,
                               atol=1e-9)
    clean = np.stack(clean, axis=1)
    np.testing.assert_allclose(detector.score_mean.numpy(), clean.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(detector.score_std.numpy(), clean.std(axis=0), rtol=1e-6)
    z = (np.stack(expected, axis=1) - clean.mean(axis=0)) / clean.std(axis=0)
    np.testing.assert_allclose(detector.score(sets["test"][:50]), z.sum(axis=1), rtol=1e-6, atol=1e-9)


def test_mahalanobis_agrees_with_sklearn_empirical_covariance(net, sets, detectors):
    covariance = pytest.importorskip("sklearn.covariance")
    detector = detectors["mahalanobis"]
    name = detector.layer_names[0]
    f = channel_means(layer_features(net, sets["fit"], layers=[detector.module_names[0]])[name])
    labels = sets["fit_labels"].numpy()
    means = np.stack([f[labels == c].mean(axis=0) for c in range(CLASSES)])
    estimator = covariance.EmpiricalCovariance(assume_centered=False).fit(f - means[labels])  # as Lee et al.'s code
    g = channel_means(layer_features(net, sets["test"][:20], layers=[name])[name])
    expected = np.min([estimator.mahalanobis(g - m) for m in means], axis=0)
    np.testing.assert_allclose(detector.layer_scores(sets["test"][:20])[:, 0], expected, rtol=1e-6)


def numpy_lid(activations: np.ndarray, references: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    distances = np.sqrt(((activations[:, None, :].astype(np.float64) - references[None].astype(np.float64)) ** 2)
                        .sum(axis=2))
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        distances[rows, exclude[rows]] = np.inf
    r = np.sort(distances, axis=1)[:, :k]
    return -1.0 / np.mean(np.log(r / r[:, -1:]), axis=1)


def test_lid_equals_the_mle_formula_computed_directly(net, sets):
    x = sets["fit"][:80]
    detector = LIDDetector(net, k=5, references=30, seed=3).fit(x)
    chosen = detector.reference_index
    assert len(chosen) == 30 and len(set(chosen.tolist())) == 30
    fit = layer_features(net, x)
    fresh = layer_features(net, sets["test"][:40])
    position = np.full(len(x), -1)
    position[chosen] = np.arange(30)
    expected, clean = [], []
    for name in detector.layer_names:
        references = fit[name][chosen].reshape(30, -1)
        expected.append(numpy_lid(fresh[name].reshape(40, -1), references, 5))
        clean.append(numpy_lid(fit[name].reshape(80, -1), references, 5, exclude=position))
    np.testing.assert_allclose(detector.layer_scores(sets["test"][:40]), np.stack(expected, axis=1), rtol=1e-6)
    clean = np.stack(clean, axis=1)  # a reference is not matched with itself (distance 0)
    assert np.isfinite(clean).all() and (clean > 0).all()
    np.testing.assert_allclose(detector.score_mean.numpy(), clean.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(detector.score_std.numpy(), clean.std(axis=0), rtol=1e-6)


@pytest.mark.parametrize("name", ["mahalanobis", "lid"])
def test_a_planted_shift_is_detected_and_fresh_clean_inputs_are_not(detectors, sets, name):
    detector = detectors[name]
    validation, test = detector.score(sets["validation"]), detector.score(sets["test"])
    assert roc_auc(validation, detector.score(sets["shifted"])) > 0.9
    assert 0.3 < roc_auc(validation, test) < 0.7
    flagged = float((test > threshold(validation, 0.1)).mean())
    assert 0.03 < flagged < 0.2, flagged


@pytest.mark.parametrize("name", ["mahalanobis", "lid"])
def test_the_state_round_trips_through_torch_save_with_weights_only(net, sets, detectors, tmp_path, name):
    detector = detectors[name]
    torch.save(detector.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    other = (MahalanobisDetector if name == "mahalanobis" else LIDDetector)(net)
    with pytest.raises(RuntimeError, match="not fitted"):
        other.score(sets["test"][:5])
    other.load_state_dict(state)
    assert other.layer_names == detector.layer_names
    assert np.array_equal(other.score(sets["shifted"][:50]), detector.score(sets["shifted"][:50]))
    assert np.array_equal(other.layer_scores(sets["test"][:50]), detector.layer_scores(sets["test"][:50]))
    for key in ("score_std", "means" if name == "mahalanobis" else "references"):
        incomplete = {k: v for k, v in state.items() if k != key}
        with pytest.raises(ValueError, match=f"missing keys.*'{key}'"):
            other.load_state_dict(incomplete)
    foreign = detectors["lid" if name == "mahalanobis" else "mahalanobis"].state_dict()
    with pytest.raises(ValueError, match="not a"):
        other.load_state_dict(foreign)
    with pytest.raises(ValueError, match="was built with layers"):
        (MahalanobisDetector if name == "mahalanobis" else LIDDetector)(net, layers=["1"]).load_state_dict(state)


def test_inputs_and_settings_are_checked(net, sets, detectors):
    with pytest.raises(ValueError, match="model space"):
        detectors["lid"].score(sets["test"][:3] * 10)
    with pytest.raises(ValueError, match="fitted on images of shape"):
        detectors["mahalanobis"].score(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="one integer label per image"):
        MahalanobisDetector(net).fit(sets["fit"][:10], np.zeros(9, dtype=int))
    with pytest.raises(ValueError, match="references"):
        LIDDetector(net, k=20, references=20)
    with pytest.raises(ValueError, match="at least references"):
        LIDDetector(net, k=5, references=30).fit(sets["fit"][:10])
