"""MagNet (seed 003's defense framework): autoencoders as the reference builds them, reconstruction-error and
JSD detectors, the reformer, seeded training and checkpoints."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from torch import nn

from advflow.data import make_synthetic, read_idx
from advflow.defenses import Detector, from_pixels
from advflow.defenses.magnet import (
    JSDDetector,
    ReconstructionDetector,
    Reformer,
    autoencoder,
    jensen_shannon,
    load_autoencoder,
    reference_detectors,
    save_autoencoder,
)
from advflow.defenses.training import AutoencoderSettings, train_autoencoder

pytestmark = pytest.mark.usefixtures("one_thread")

FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
#: Enough to learn more than the mean image in about a second per autoencoder (the reference: batch 256,
#: lr 1e-3, 100 epochs of 55,000 images).
QUICK = AutoencoderSettings(epochs=5, batch_size=16, lr=1e-2, log_every=1000)


@pytest.fixture(scope="module")
def clean_images() -> np.ndarray:
    """600 uint8 (N, 1, 28, 28) images: Debian's Fashion-MNIST test images, or synthetic ones without it."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if FASHION.is_file():
        return np.ascontiguousarray(read_idx(FASHION)[:600, None])
    return make_synthetic(n_train=600, n_test=1, size=28, seed=0).train.images


@pytest.fixture(scope="module")
def trained(clean_images) -> dict[str, nn.Module]:
    return {name: train_autoencoder(name, clean_images[:400], QUICK) for name in ("ae_i", "ae_ii")}


def model_space(images: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(images.astype(np.float32) / 127.5 - 1.0)


def classifier(channels: int = 1, size: int = 28) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 10))


@pytest.mark.parametrize("name", ["ae_i", "ae_ii"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 27])
def test_autoencoders_keep_the_shape_and_the_pixel_range(name, channels, size):
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        out = autoencoder(name, channels)(x)
    assert out.shape == x.shape
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_architectures_are_the_references_mnist_autoencoders():
    ae_i, ae_ii = autoencoder("ae_i", 1), autoencoder("ae_ii", 1)
    kinds = [type(layer).__name__ for layer in ae_i.layers]
    assert kinds == ["Conv2d", "Sigmoid", "AvgPool2d", "Conv2d", "Sigmoid",  # encoder [3, "average", 3]
                     "Conv2d", "Sigmoid", "Upsample", "Conv2d", "Sigmoid",  # mirrored decoder
                     "Conv2d", "Sigmoid"]  # back to the image's channels
    assert [type(layer).__name__ for layer in ae_ii.layers] == ["Conv2d", "Sigmoid"] * 3
    assert all(c.kernel_size == (3, 3) for c in ae_i.modules() if isinstance(c, nn.Conv2d))
    assert [c.out_channels for c in ae_ii.modules() if isinstance(c, nn.Conv2d)] == [3, 3, 1]
    assert sum(p.numel() for p in ae_i.parameters()) == 30 + 84 * 3 + 28
    assert sum(p.numel() for p in ae_ii.parameters()) == 30 + 84 + 28


def test_unknown_architecture_names_the_allowed_ones():
    with pytest.raises(ValueError, match="ae_i, ae_ii"):
        autoencoder("ae_iii", 1)


def test_bad_settings_name_the_problem():
    with pytest.raises(ValueError, match="lr must be a number > 0"):
        AutoencoderSettings(lr="1e-3")
    with pytest.raises(ValueError, match="p = 1 or 2"):
        ReconstructionDetector(autoencoder("ae_i", 1), 3)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        JSDDetector(autoencoder("ae_i", 1), classifier(), 0.0)
    with pytest.raises(ValueError, match=r"takes \(N, 1, H, W\) inputs"):
        ReconstructionDetector(autoencoder("ae_i", 1), 1).score(torch.zeros(2, 3, 28, 28))


def test_trained_autoencoders_reconstruct_clean_images_better_than_noise(trained, clean_images):
    clean = model_space(clean_images[400:600])
    noise = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2.0 - 1.0
    for name, ae in trained.items():
        for p in (1, 2):
            detector = ReconstructionDetector(ae, p)
            assert isinstance(detector, Detector) and detector.name == f"magnet_l{p}"
            clean_scores, noise_scores = detector.score(clean), detector.score(noise)
            assert clean_scores.dtype == np.float64 and clean_scores.shape == (200,)
            assert clean_scores.max() < noise_scores.min(), (name, p)


def test_reconstruction_score_is_the_mean_pixel_error(trained, clean_images):
    ae = trained["ae_i"]
    x = model_space(clean_images[:3])
    with torch.no_grad():
        error = ((x + 1.0) / 2.0 - ae((x + 1.0) / 2.0)).double()
    assert np.allclose(ReconstructionDetector(ae, 1).score(x), error.abs().mean(dim=(1, 2, 3)).numpy())
    assert np.allclose(ReconstructionDetector(ae, 2, batch_size=2).score(x), (error ** 2).mean(dim=(1, 2, 3)).numpy())


def test_jensen_shannon_matches_scipy_and_is_bounded():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(10), 50), rng.dirichlet(np.ones(10) * 0.2, 50)
    p[0, :5], q[0, 5:] = 0.0, 0.0  # disjoint supports: the bound log 2
    p[0] /= p[0].sum()
    q[0] /= q[0].sum()
    ours = jensen_shannon(torch.as_tensor(p), torch.as_tensor(q)).numpy()
    assert np.allclose(ours, jensenshannon(p, q, axis=1) ** 2, atol=1e-12)
    assert np.allclose(ours, jensen_shannon(torch.as_tensor(q), torch.as_tensor(p)).numpy())
    assert math.isclose(ours[0], math.log(2.0)) and (ours <= math.log(2.0)).all()
    assert np.array_equal(jensen_shannon(torch.as_tensor(p), torch.as_tensor(p)).numpy(), np.zeros(50))


def test_jsd_detector_scores_the_divergence_of_tempered_softmaxes(trained, clean_images):
    ae, net = trained["ae_i"], classifier()
    x = model_space(clean_images[:20])
    for t in (10, 40):
        detector = JSDDetector(ae, net, t)
        assert detector.name == f"magnet_jsd_T{t}"
        scores = detector.score(x)
        with torch.no_grad():
            p = torch.softmax(net(x).double() / t, dim=1).numpy()
            q = torch.softmax(net(from_pixels(ae((x + 1.0) / 2.0))).double() / t, dim=1).numpy()
        assert scores.shape == (20,) and np.allclose(scores, jensenshannon(p, q, axis=1) ** 2, atol=1e-12)
    assert set(reference_detectors(ae, trained["ae_ii"], net)) == {"magnet_l2", "magnet_l1", "magnet_jsd_T10",
                                                                   "magnet_jsd_T40"}


def test_reformer_classifies_the_reconstruction(trained, clean_images):
    ae, net = trained["ae_i"], classifier()
    x = model_space(clean_images[:10])
    reformed = Reformer(ae, batch_size=4)(x)
    with torch.no_grad():
        assert torch.allclose(reformed, from_pixels(ae((x + 1.0) / 2.0)))
        assert np.array_equal(Reformer(ae).predict(net, x), net(reformed).argmax(1).numpy())
    assert reformed.min() >= -1.0 and reformed.max() <= 1.0


def test_training_with_the_same_seed_is_repeatable(clean_images):
    settings = AutoencoderSettings(epochs=1, batch_size=32, lr=1e-2, seed=3, log_every=1000)
    nhwc = np.ascontiguousarray(clean_images[:96].transpose(0, 2, 3, 1))  # the (N, H, W, C) layout too
    a, b = train_autoencoder("ae_i", clean_images[:96], settings), train_autoencoder("ae_i", nhwc, settings)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    c = train_autoencoder("ae_i", clean_images[:96], AutoencoderSettings(**{**vars(settings), "seed": 4}))
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)
    with pytest.raises(ValueError, match="uint8"):
        train_autoencoder("ae_i", clean_images[:8].astype(np.float32), settings)


def test_checkpoint_round_trip_gives_identical_outputs(trained, tmp_path):
    x = torch.rand(4, 1, 28, 28)
    for name, ae in trained.items():
        path = tmp_path / f"{name}.pt"
        save_autoencoder(ae, name, path)
        assert torch.load(path, weights_only=True)["architecture"] == name
        again = load_autoencoder(path)
        with torch.no_grad():
            assert torch.equal(ae(x), again(x))
    detector = ReconstructionDetector(trained["ae_ii"], 1)
    torch.save(detector.state_dict(), tmp_path / "detector.pt")
    fresh = ReconstructionDetector(autoencoder("ae_ii", 1), 1)
    fresh.load_state_dict(torch.load(tmp_path / "detector.pt", weights_only=True))
    assert np.array_equal(fresh.score(x * 2 - 1), detector.score(x * 2 - 1))


def test_truncated_or_foreign_checkpoint_names_the_file_and_the_fix(trained, tmp_path):
    path = tmp_path / "ae_i.pt"
    save_autoencoder(trained["ae_i"], "ae_i", path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(OSError, match=rf"{path}: damaged.*moved to ae_i\.pt\.damaged.*rule train_autoencoder"):
        load_autoencoder(path)
    assert not path.exists() and path.with_name("ae_i.pt.damaged").exists()  # kept; the next run retrains it
    torch.save({"architecture": {"name": "deep_conv"}, "state_dict": {}}, path)
    with pytest.raises(OSError, match=rf"{path}.*not a MagNet autoencoder checkpoint"):
        load_autoencoder(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_autoencoder(tmp_path / "missing.pt")
