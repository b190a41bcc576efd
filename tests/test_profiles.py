"""Input profiles: N random training images, and N test seeds every attacked model classifies correctly."""

import h5py
import numpy as np
import pytest
import torch

from advflow.data import Dataset, Split, write_prepared
from advflow.models.architectures import load_checkpoint, save_checkpoint
from advflow.attacks.profiles import (correctly_classified, load_profile, select_attack_seeds, select_normal_train,
                              select_profiles)
from conftest import BLOB_CLASSES, blobs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, model):
    """A prepared blob dataset and two checkpoints: the trained blob model and a copy that is wrong on
    every image of class 0 (its class-0 logit is pushed down)."""
    folder = tmp_path_factory.mktemp("profiles")
    train_images, train_labels = blobs(120, seed=5)
    test_images, test_labels = blobs(300, seed=6)
    data = Dataset("blobs", Split(train_images, train_labels), Split(test_images, test_labels),
                   [str(c) for c in range(BLOB_CLASSES)], source="generated")
    write_prepared(data, folder / "blobs.h5")
    save_checkpoint(model, folder / "good.pt")
    biased = type(model)(model.arch)
    biased.load_state_dict(model.state_dict())
    with torch.no_grad():
        biased.fc[-1].bias[0] -= 1e4
    save_checkpoint(biased, folder / "biased.pt")
    return folder, data


def select(folder, models, n, seed=0, tag="a"):
    out_train, out_test = folder / f"train_{tag}.h5", folder / f"test_{tag}.h5"
    select_profiles(folder / "blobs.h5", [folder / m for m in models], n=n, seed=seed, device=torch.device("cpu"),
                    out_train=out_train, out_test=out_test)
    return load_profile(out_train), load_profile(out_test)


def test_seeds_are_n_distinct_test_images_every_model_classifies_correctly(prepared, model):
    folder, data = prepared
    (train_images, _, train_idx), (images, labels, indices) = select(folder, ["good.pt", "biased.pt"], n=40)
    assert len(indices) == 40 and len(set(indices.tolist())) == 40 and np.all(np.diff(indices) > 0)
    assert np.array_equal(images, data.test.images[indices]) and np.array_equal(labels, data.test.labels[indices])
    assert not (labels == 0).any()  # the biased model misclassifies every class-0 image
    assert correctly_classified([model], images, labels, torch.device("cpu")).all()
    assert len(train_idx) == 40 and np.array_equal(train_images, data.train.images[train_idx])


def test_profiles_are_repeatable_from_the_seed_and_change_with_it(prepared):
    folder, _ = prepared
    first = select(folder, ["good.pt"], n=20, seed=1, tag="b")
    again = select(folder, ["good.pt"], n=20, seed=1, tag="c")
    other = select(folder, ["good.pt"], n=20, seed=2, tag="d")
    assert np.array_equal(first[1][2], again[1][2]) and np.array_equal(first[0][2], again[0][2])
    assert not np.array_equal(first[1][2], other[1][2])


def test_too_few_correct_seeds_names_the_key_to_lower(prepared):
    folder, data = prepared
    with pytest.raises(RuntimeError, match=r"lower inputs.n"):
        select(folder, ["good.pt"], n=len(data.test.labels) + 1, tag="e")
    with h5py.File(folder / "blobs.h5") as h5:  # the prepared data is untouched
        assert len(h5["test/labels"]) == 300


def test_the_two_profile_jobs_draw_what_one_seeded_stream_draws(prepared):
    """normal_train (no model) and the attack seeds are separate jobs; the seeds' order continues the stream after
    normal_train's draw, so each file equals what one random stream gives: the draw, then the seeds' order."""
    folder, data = prepared
    cpu = torch.device("cpu")
    select_attack_seeds(folder / "blobs.h5", [folder / "good.pt"], n=25, seed=3, device=cpu, out=folder / "s.h5")
    select_normal_train(folder / "blobs.h5", n=25, seed=3, out=folder / "t.h5")
    rng = np.random.default_rng(3)
    train = np.sort(rng.choice(len(data.train.labels), size=25, replace=False))
    order = rng.permutation(len(data.test.labels))
    correct = correctly_classified([load_checkpoint(folder / "good.pt", cpu)], data.test.images[order],
                                   data.test.labels[order], cpu)
    assert np.array_equal(load_profile(folder / "t.h5")[2], train)
    assert np.array_equal(load_profile(folder / "s.h5")[2], np.sort(order[correct][:25]))

