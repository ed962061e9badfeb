"""How well the model predicts the type of a user's next event (view / cart / purchase / like ...), against the
majority-type and last-type baselines, on the same hold-out (metrics.next_type_metrics for the definitions)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model_lib.data.splits import HoldOut, Split
from model_lib.evaluation.baselines import last_type, majority_type
from model_lib.evaluation.metrics import next_type_metrics

MODEL = "LSTM + attention"
BASELINES = {"majority type": majority_type, "last type (Markov)": last_type}


def compare(
    type_probabilities: Callable[[HoldOut], np.ndarray] | None, split: Split, event_types: list[str]
) -> dict[str, dict[str, float]]:
    """The model and both baselines on the test hold-out's next event type; {} when the model has no event-type head
    (`type_probabilities` None: one event type in the data) or the hold-out carries no types.

    `type_probabilities(holdout)`: (N, E) the model's chance of each configured type for every hold-out user's next
    event (model.scoring.type_probabilities), passed in so that judging a model never needs the model's code."""
    test = split.test
    if type_probabilities is None or test.target_types is None or not len(test.targets):
        return {}
    predictions = {MODEL: type_probabilities(test)}
    for name, baseline in BASELINES.items():
        predictions[name] = baseline(split.train, test, len(event_types))
    return {name: next_type_metrics(p, test.target_types, list(event_types)) for name, p in predictions.items()}
