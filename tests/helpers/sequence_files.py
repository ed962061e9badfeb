"""Small sequence tables for tests: a learnable toy task, written as the sessionize job's Parquet files."""

from __future__ import annotations

import numpy as np
import pandas as pd

from model_lib.data.splits import Sequences


def cycle_sequences(users: int, num_items: int, steps: int, seed: int = 0, event_types: int = 1) -> Sequences:
    """Users walk one hidden cycle over the items, so the next item is predictable from the last one.

    With `event_types` > 1 the event type follows the position in the walk (1, 2, .., event_types, 1, ...), so
    the next type is predictable too.
    """
    rng = np.random.default_rng(seed)
    cycle = 2 + rng.permutation(num_items - 2)
    starts = rng.integers(0, len(cycle), users)
    items = np.array([[cycle[(s + k) % len(cycle)] for k in range(steps)] for s in starts], np.int32)
    types = (np.arange(steps)[None, :] + starts[:, None]) % event_types + 1
    return Sequences(
        np.array([f"u{k:05d}" for k in range(users)], dtype=object),
        items,
        types.astype(np.int32),
        np.full_like(items, 3),
        [np.zeros(0, np.int64) for _ in range(users)],
    )


def register_tiny_model(
    settings,
    num_items: int = 30,
    seed: int = 1,
    documents: dict | None = None,
    policy=None,
    event_type_head=False,
    spark=None,
    segment_users=None,
    attention_blocks=0,
):
    """An untrained (seeded) model over items i2..i{num_items-1}, registered in the settings' MLflow store
    -> (version, vocabulary). Counts fall with the index, so i2 is the most popular item. With `spark` and
    `segment_users` (Sequences in the model's indices), its user segments are fitted on them as training does."""
    import keras

    from model_lib.model.network import NextItemModel, build_model
    from model_lib.serving import registry
    from model_lib.serving.recommender import Recommender

    keras.utils.set_random_seed(seed)
    model = NextItemModel(
        num_items,
        settings.sessionize.num_event_types,
        settings.sessionize.num_gap_buckets,
        embedding_dim=8,
        hidden_dim=8,
        event_type_head=event_type_head,
        attention_blocks=attention_blocks,
    )
    build_model(model)
    indices = np.arange(2, num_items)
    vocabulary = pd.DataFrame({"item_index": indices, "item_id": [f"i{k}" for k in indices], "count": 1000 - indices})
    recommender = Recommender(model, vocabulary, settings.sessionize.event_types, policy)
    if spark is not None:
        from model_lib.serving import profiles

        rules = profiles.SegmentRules(settings.serving.profile_segments, settings.training.seed)
        profiles.segments_of_model(spark, recommender, segment_users, settings.sessionize.seq_len, rules)
    return registry.register_recommender(recommender, settings, "tiny", {"purpose": "test"}, documents), vocabulary
