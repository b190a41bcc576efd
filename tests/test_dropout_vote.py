"""Seed 001's dropout vote (advflow.defenses.dropout): with dropout off every vote agrees and the spread is 0; the
spread is higher on average on inputs built to be ambiguous than on confident clean ones; the same seed gives the
same votes; a model without dropout layers and no rate is refused naming the key; bad K and rates are refused;
the model's modes are restored afterwards."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from advflow.defenses.dropout import DropoutVote, check_vote_settings

pytestmark = pytest.mark.usefixtures("one_thread")


def test_with_dropout_off_every_vote_agrees_and_the_spread_is_zero(model, seeds):
    x, y = seeds
    vote = DropoutVote(model, k=7, rate=0.0, seed=1)
    votes, plurality, spread = vote.predict_and_score(x, 4)
    assert votes.shape == (len(x), 7) and (votes == votes[:, :1]).all()
    assert (spread == 0).all() and np.array_equal(plurality, y.numpy())
    assert all(not m.training for m in model.modules())  # restored to eval mode


def test_the_spread_is_higher_on_ambiguous_inputs_than_on_confident_clean_ones(model, seeds):
    x, y = seeds
    vote = DropoutVote(model, k=40, rate=0.5, seed=2)
    clean = vote.score(x)
    # Ambiguous: halfway between inputs of two classes (one blob each, both at half strength).
    mixed = (x + x.roll(1, 0)) / 2
    ambiguous = vote.score(mixed)
    assert ambiguous.mean() > clean.mean() + 0.05


def test_the_same_seed_gives_the_same_votes_and_another_seed_others(model, seeds):
    x, _ = seeds
    mixed = (x + x.roll(1, 0)) / 2
    first = DropoutVote(model, k=20, rate=0.5, seed=3).votes(mixed)
    assert np.array_equal(first, DropoutVote(model, k=20, rate=0.5, seed=3).votes(mixed))
    assert not np.array_equal(first, DropoutVote(model, k=20, rate=0.5, seed=4).votes(mixed))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    DropoutVote(model, k=2, rate=0.5, seed=3).votes(mixed)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was


def test_running_the_layers_before_the_first_dropout_once_gives_the_same_votes_as_whole_passes(model, seeds):
    x, _ = seeds
    mixed = (x + x.roll(1, 0)) / 2
    split = DropoutVote(model, k=15, rate=0.5, seed=5)
    assert split.first_random is not None  # the fixture's ConvNet has dropout after its first pooled block
    whole = DropoutVote(model, k=15, rate=0.5, seed=5, split=False)
    assert whole.first_random is None
    np.testing.assert_array_equal(split.votes(mixed), whole.votes(mixed))


def test_a_model_without_dropout_needs_a_rate_and_gets_dropout_between_its_layers():
    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    with pytest.raises(ValueError, match=r"no dropout layer.*set defense\.dropout_vote\.rate"):
        DropoutVote(plain, k=5)
    x = torch.randn(30, 1, 2, 2)
    votes = DropoutVote(plain, k=25, rate=0.6, seed=0).votes(x)
    assert (votes != votes[:, :1]).any()  # the hook after the hidden layer makes the votes differ
    assert not (DropoutVote(plain, k=3, rate=0.0, seed=0).votes(x) != plain(x).argmax(1).numpy()[:, None]).any()
    assert not plain[1]._forward_hooks  # hooks removed afterwards


@pytest.mark.parametrize("k, rate, message", [
    (0, None, r"dropout_vote\.k"), (2.5, None, r"dropout_vote\.k"), (True, None, r"dropout_vote\.k"),
    (5, 1.0, r"dropout_vote\.rate"), (5, -0.1, r"dropout_vote\.rate"), (5, float("nan"), r"dropout_vote\.rate")])
def test_bad_votes_or_rates_are_refused_naming_the_key(k, rate, message):
    with pytest.raises(ValueError, match=message):
        check_vote_settings(k, rate)


def _rates_and_modes(model: nn.Module) -> dict[str, tuple[bool, float | None]]:
    return {name: (m.training, getattr(m, "p", None)) for name, m in model.named_modules()}


@pytest.mark.parametrize("rate", [0.7, None])
@pytest.mark.parametrize("mode", ["eval", "train", "mixed"])
def test_a_vote_leaves_every_dropout_rate_mode_and_the_eval_outputs_exactly_as_they_were(rate, mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 8),
                          nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3))
    model.train(mode == "train")
    if mode == "mixed":
        model[3].train()
        model[5].train()
    before = _rates_and_modes(model)
    assert before["3"] == (mode != "eval", 0.3) and before["7"] == (mode == "train", 0.1)
    x = torch.randn(10, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs = copy.deepcopy(model).eval()(x)
    DropoutVote(model, k=5, rate=rate, seed=0).votes(x)
    assert _rates_and_modes(model) == before
    assert model[3].p == 0.3 and model[7].p == 0.1
    assert not any(m._forward_hooks for m in model.modules())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), outputs)


def _logits_fixed_at(model: nn.Module, last: nn.Linear) -> nn.Module:
    """``model`` whose last layer ignores its input and always gives logits (10, 1, 1, ...): dropout anywhere before
    it cannot change the class (0), dropout on the logits themselves would (a dropped 10 leaves 1/(1-p) or 0)."""
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(1.0)
        last.bias[0] = 10.0
    return model.eval()


def test_a_vote_drops_out_hidden_layers_only_never_the_logits_without_dropout_layers():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    plain = _logits_fixed_at(plain, plain[3])
    x = torch.randn(20, 1, 2, 2)
    votes = DropoutVote(plain, k=25, rate=0.5, seed=0).votes(x)
    assert (votes == 0).all(), f"the vote dropped out the logits: {np.bincount(votes.ravel())}"


def test_a_vote_drops_out_the_models_own_dropout_layers_only_never_the_logits():
    torch.manual_seed(0)
    own = nn.Sequential(nn.Flatten(), nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    own = _logits_fixed_at(own, own[4])
    x = torch.randn(20, 1, 2, 2)
    for rate in (None, 0.5):
        votes = DropoutVote(own, k=25, rate=rate, seed=0).votes(x)
        assert (votes == 0).all(), f"the vote dropped out the logits: {np.bincount(votes.ravel())}"


@pytest.mark.parametrize("split", [True, False])
def test_a_convnets_vote_drops_out_its_dropout_layers_only_never_the_logits(model, seeds, split):
    net = copy.deepcopy(model)
    net = _logits_fixed_at(net, net.fc[-1])
    x, _ = seeds
    vote = DropoutVote(net, k=25, rate=0.5, seed=0, split=split)
    assert (vote.first_random is not None) == split
    votes = vote.votes(x)
    assert (votes == 0).all(), f"the vote dropped out the logits: {np.bincount(votes.ravel())}"


def test_the_plurality_is_the_most_voted_class_ties_going_to_the_lowest_and_the_spread_its_complement():
    votes = np.array([[2, 1, 1, 2], [3, 0, 3, 0], [1, 1, 1, 3], [2, 2, 2, 2]])
    plurality, share = DropoutVote.tally(votes, 4)
    assert plurality.tolist() == [1, 0, 1, 2] and share.tolist() == [0.5, 0.5, 0.75, 1.0]
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    vote = DropoutVote(model, k=4, rate=0.5)
    vote.votes = lambda x: votes  # a planted vote
    _, plurality, spread = vote.predict_and_score(torch.zeros(4, 1, 2, 2), 4)
    assert plurality.tolist() == [1, 0, 1, 2] and spread.tolist() == [0.5, 0.5, 0.25, 0.0]
    assert vote.score(torch.zeros(4, 1, 2, 2)).tolist() == [0.5, 0.5, 0.25, 0.0]
