"""How well the model predicts the type of a user's next event (view / cart / purchase / like ...), against the
majority-type and last-type baselines, on the same hold-out (metrics.next_type_metrics for the definitions)."""

from __future__ import annotations

import numpy as np

from model_lib.data.splits import HoldOut, Split
from model_lib.evaluation.baselines import last_type, majority_type
from model_lib.evaluation.metrics import next_type_metrics

MODEL = "LSTM + attention"
BASELINES = {"majority type": majority_type, "last type (Markov)": last_type}


def model_type_probabilities(model, holdout: HoldOut) -> np.ndarray:
    """(N, E) the model's chance of each configured type for every hold-out user's next event (the head's softmax at
    the last step, the padding type left out), through the one scoring path."""
    from model_lib.serving.recommender import ModelScorer

    return ModelScorer(model).encode(holdout.inputs.model_inputs()).next_types[:, 1:]


def compare(model, split: Split, event_types: list[str]) -> dict[str, dict[str, float]]:
    """The model and both baselines on the test hold-out's next event type; {} when the model has no event-type head
    (one event type in the data) or the hold-out carries no types."""
    test = split.test
    if not getattr(model, "event_type_head", False) or test.target_types is None or not len(test.targets):
        return {}
    predictions = {MODEL: model_type_probabilities(model, test)}
    for name, baseline in BASELINES.items():
        predictions[name] = baseline(split.train, test, len(event_types))
    return {name: next_type_metrics(p, test.target_types, list(event_types)) for name, p in predictions.items()}
