"""Training: seeded repeatability, the held-out split, defensive distillation's soft labels."""

import numpy as np
import torch

from advflow.models.architectures import ConvNet, architecture
from advflow.models.training import TrainSettings, fit, predict_logits, soft_labels, split_indices


def toy_data(n=60):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    images = (rng.random((n, 1, 8, 8)) * 80 + labels[:, None, None, None] * 80).astype(np.uint8)
    return images, labels


def train_once(images, labels, seed):
    torch.manual_seed(seed)
    model = ConvNet(architecture("deep_conv", 1, (8, 8), 3))
    fit(model, images, labels, TrainSettings(epochs=2, batch_size=16, log_every=100), seed=seed,
        device=torch.device("cpu"))
    return model


def test_training_with_the_same_seed_is_repeatable():
    images, labels = toy_data()
    a, b = train_once(images, labels, seed=3), train_once(images, labels, seed=3)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    c = train_once(images, labels, seed=4)
    assert not torch.equal(a.fc[0].weight, c.fc[0].weight)


def test_split_keeps_held_out_images_out_of_training():
    train, val = split_indices(1000, val_size=100, train_size=500, seed=0)
    assert len(train) == 500 and len(val) == 100
    assert not set(train) & set(val)
    again, _ = split_indices(1000, val_size=100, train_size=500, seed=0)
    assert np.array_equal(train, again)


def test_soft_labels_are_the_teachers_softmax_at_temperature_40():
    images, _ = toy_data(12)
    torch.manual_seed(0)
    teacher = ConvNet(architecture("good_init", 1, (8, 8), 3))
    logits = predict_logits(teacher, images, torch.device("cpu"))
    labels = soft_labels(teacher, images, 40.0, torch.device("cpu"))
    torch.testing.assert_close(labels, torch.softmax(logits / 40.0, dim=1))
    torch.testing.assert_close(labels.sum(1), torch.ones(12))
    # T = 40 flattens the distribution compared with T = 1.
    assert labels.max(1).values.mean() < torch.softmax(logits, 1).max(1).values.mean()


def test_validation_accuracy_is_logged_each_epoch_and_does_not_change_training(caplog):
    """The held-out accuracy after each epoch is logged and returned; the last one equals the trained
    model's accuracy on those images computed independently; training with it gives the same weights."""
    images, labels = toy_data()
    val_images, val_labels = toy_data(30)
    torch.manual_seed(3)
    model = ConvNet(architecture("deep_conv", 1, (8, 8), 3))
    with caplog.at_level("INFO", logger="advflow.models.training"):
        history = fit(model, images, labels, TrainSettings(epochs=2, batch_size=16, log_every=100), seed=3,
                      device=torch.device("cpu"), val=(val_images, val_labels))
    assert len(history["val_accuracy"]) == 2
    expected = float((predict_logits(model, val_images, torch.device("cpu")).argmax(1).numpy() == val_labels).mean())
    assert history["val_accuracy"][-1] == round(expected, 5)
    lines = [r.getMessage() for r in caplog.records if "validation accuracy" in r.getMessage()]
    assert [line.split(" validation")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    plain = train_once(images, labels, seed=3)
    for (name, pa), pb in zip(model.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_training_leaves_subnormal_floats_as_they_were():
    """fit flushes subnormals to zero while it trains (speed at T = 40) and restores IEEE behaviour, so
    a softmax derivative of about 1e-40 computed afterwards in the same process is not 0."""
    images, labels = toy_data()
    train_once(images, labels, seed=3)
    tiny = torch.tensor([1e-39], dtype=torch.float32) * torch.tensor([0.5])
    assert float(tiny) > 0.0


def test_early_stopping_stops_when_the_held_out_accuracy_stops_improving_and_keeps_the_best_epoch():
    """patience = 2 with at most 30 epochs: training stops 2 epochs after its best held-out accuracy, and the model
    is that epoch's (its accuracy on the held-out images, computed independently, is the best, not the last)."""
    images, labels = toy_data()
    val_images, _ = toy_data(30)
    val_labels = np.random.default_rng(1).integers(0, 3, 30)  # noisy held-out labels: the accuracy goes up and down
    torch.manual_seed(3)
    model = ConvNet(architecture("deep_conv", 1, (8, 8), 3))
    history = fit(model, images, labels, TrainSettings(epochs=30, batch_size=16, log_every=100, patience=2,
                                                       lr_schedule="constant"),
                  seed=3, device=torch.device("cpu"), val=(val_images, val_labels))
    accuracies = history["val_accuracy"]
    assert history["epochs_run"] == len(accuracies) < 30
    best = max(accuracies)
    assert history["best_epoch"] == accuracies.index(best) + 1 == len(accuracies) - 2
    kept = float((predict_logits(model, val_images, torch.device("cpu")).argmax(1).numpy() == val_labels).mean())
    assert round(kept, 5) == best
    # the kept weights are the best epoch's: the same training run for exactly that many epochs
    torch.manual_seed(3)
    reference = ConvNet(architecture("deep_conv", 1, (8, 8), 3))
    fit(reference, images, labels, TrainSettings(epochs=history["best_epoch"], batch_size=16, log_every=100,
                                                 lr_schedule="constant"), seed=3, device=torch.device("cpu"))
    for (name, ours), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(ours, theirs), name


def test_early_stopping_without_held_out_images_is_refused():
    images, labels = toy_data()
    model = ConvNet(architecture("deep_conv", 1, (8, 8), 3))
    try:
        fit(model, images, labels, TrainSettings(epochs=3, patience=1), seed=0, device=torch.device("cpu"))
    except ValueError as error:
        assert "training.patience" in str(error) and "val_size" in str(error)
    else:
        raise AssertionError("patience without held-out images must be refused")
