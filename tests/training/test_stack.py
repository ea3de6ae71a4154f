"""The ensemble's stack and thresholds, chosen on out-of-fold predictions (training/stack.py)."""

import json

import numpy as np
import pytest

from policylens.io import InputError
from policylens.tagger.ensemble import ProbabilityMean, Stack, combiner_from_dict
from training.stack import (
    choose_thresholds,
    crossfit_stack_probs,
    fit_stack,
    read_recipe,
    stack_for,
    write_recipe,
)


def synthetic(n: int = 2000, seed: int = 0):
    """Label 0 is driven by the lexical logit only, label 1 by the encoder logit only."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, 2)) < 0.3
    signal = np.where(y, 2.0, -2.0) + rng.normal(0, 1.0, (n, 2))
    noise = rng.normal(0, 2.0, (n, 2))
    encoder = np.column_stack([noise[:, 0], signal[:, 1]])
    lexical = np.column_stack([signal[:, 0], noise[:, 1]])
    return encoder, lexical, y.astype(int)


def test_the_stack_weights_the_input_that_carries_the_label():
    encoder, lexical, y = synthetic()
    stack = fit_stack(encoder, lexical, y)
    assert stack.lexical[0] > 5 * abs(stack.encoder[0])
    assert stack.encoder[1] > 5 * abs(stack.lexical[1])
    probs = stack.probs(encoder, lexical)
    assert probs.shape == y.shape and ((probs >= 0.5) == y).mean() > 0.9


def test_crossfitted_probabilities_never_see_their_own_fold():
    encoder, lexical, y = synthetic(600)
    folds = np.arange(600) % 3
    flipped = y.copy()
    flipped[folds == 0] = 1 - flipped[folds == 0]  # fold 0's labels contradict the others
    probs = crossfit_stack_probs(encoder, lexical, flipped, folds)
    # fitted on folds 1-2 only, fold 0 is predicted from the true relation, so against its flipped labels it is wrong
    assert ((probs[folds == 0] >= 0.5) == flipped[folds == 0]).mean() < 0.2


def test_a_threshold_is_tuned_only_where_it_beats_half_beyond_the_spread():
    rng = np.random.default_rng(1)
    n = 3000
    y = (rng.random((n, 2)) < 0.3).astype(int)
    probs = np.empty((n, 2))
    probs[:, 0] = np.clip(np.where(y[:, 0], 0.3, 0.1) + rng.normal(0, 0.05, n), 0, 1)  # all below 0.5: 0.5 finds nothing
    probs[:, 1] = np.clip(np.where(y[:, 1], 0.8, 0.2) + rng.normal(0, 0.1, n), 0, 1)  # well calibrated around 0.5
    folds = np.arange(n) % 5
    thresholds, evidence = choose_thresholds(y, probs, folds)
    assert 0.15 <= thresholds[0] <= 0.25 and evidence[0]["mean_gain"] > evidence[0]["spread"]
    assert thresholds[1] == 0.5 and evidence[1]["kept"] == 0.5


def test_recipe_round_trip_and_labels_it_lacks_are_fitted_on_dev(tmp_path):
    encoder, lexical, y = synthetic(400)
    stack = Stack(encoder=[1.5, 0.2], lexical=[0.3, 2.0], bias=[-0.5, 0.1])
    path = write_recipe(tmp_path / "recipe.json", ["a", "b"], stack, np.array([0.4, 0.5]), {"cv": "test"})
    recipe = read_recipe(path)
    assert recipe.combine == "logistic" and recipe.labels["a"] == {"encoder": 1.5, "lexical": 0.3, "bias": -0.5, "threshold": 0.4}
    del recipe.labels["b"]  # a new domain the recipe was not chosen for
    chosen, thresholds, from_dev = stack_for(["a", "b"], recipe, encoder, lexical, y)
    assert from_dev == ["b"] and chosen.encoder[0] == 1.5 and thresholds.tolist() == [0.4, 0.5]
    assert chosen.encoder[1] == pytest.approx(fit_stack(encoder, lexical, y).encoder[1])


def test_a_mean_recipe_fits_nothing_and_a_new_domain_gets_a_flat_half(tmp_path):
    encoder, lexical, y = synthetic(400)
    path = write_recipe(tmp_path / "recipe.json", ["a", "b"], ProbabilityMean(2), np.array([0.4, 0.5]), {})
    recipe = read_recipe(path)
    assert recipe.combine == "mean" and recipe.labels == {"a": {"threshold": 0.4}, "b": {"threshold": 0.5}}
    chosen, thresholds, from_dev = stack_for(["a", "b", "new"], recipe, encoder[:, [0, 1, 1]], lexical[:, [0, 1, 1]], y[:, [0, 1, 1]])
    assert isinstance(chosen, ProbabilityMean) and len(chosen) == 3 and from_dev == []
    assert thresholds.tolist() == [0.4, 0.5, 0.5]
    # the mean of the two probabilities, whatever the logits' scale
    probs = chosen.probs(np.array([[4.0, -4.0, 0.0]]), np.array([[-4.0, -4.0, 2.0]]))
    expected = (1 / (1 + np.exp(-np.array([4.0, -4.0, 0.0]))) + 1 / (1 + np.exp(-np.array([-4.0, -4.0, 2.0])))) / 2
    np.testing.assert_allclose(probs[0], expected, atol=1e-6)
    assert combiner_from_dict(chosen.to_dict()) == chosen  # what policylens.json stores
    assert isinstance(combiner_from_dict({"encoder": [1.0], "lexical": [1.0], "bias": [0.0]}), Stack)  # older models
    with pytest.raises(ValueError, match="unknown combine"):
        combiner_from_dict({"combine": "max", "labels": 3})


def test_a_broken_recipe_is_named(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="recipe.json"):
        read_recipe(path)
    path.write_text(json.dumps({"format": "policylens-stack-recipe/1", "labels": {"a": {"encoder": "x"}}}))
    with pytest.raises(InputError, match="'a' needs numeric"):
        read_recipe(path)
    path.write_text(json.dumps({"format": "policylens-stack-recipe/1", "combine": "max", "labels": {}}))
    with pytest.raises(InputError, match="unknown combine 'max'"):
        read_recipe(path)


def test_stack_is_validated():
    with pytest.raises(ValueError, match="one value per label"):
        Stack(encoder=[1.0], lexical=[1.0, 2.0], bias=[0.0])
    with pytest.raises(ValueError, match="finite"):
        Stack(encoder=[float("nan")], lexical=[1.0], bias=[0.0])
