"""The scoring benchmark's references measured in the same run (bench/scoring.py): numpy's own matrix multiply of the
same shapes and of a square one, and TensorFlow's top-K on the same score blocks."""

from __future__ import annotations

import time

import numpy as np

from bench.scoring_inputs import K
from model_lib.data.splits import Sequences


def numpy_reference(users: int, item_matrix: np.ndarray) -> dict:
    """The machine's float32 multiply rate for the scoring multiply's shapes, and for a square multiply."""
    from model_lib.serving.recommender import SCORING_BATCH

    rng = np.random.default_rng(0)
    left = rng.standard_normal((SCORING_BATCH, item_matrix.shape[0])).astype(np.float32)
    right = rng.standard_normal(item_matrix.shape).astype(np.float32)
    out = np.empty((SCORING_BATCH, item_matrix.shape[1]), np.float32)
    batches = max(1, users // SCORING_BATCH)
    np.matmul(left, right, out=out)
    started = time.perf_counter()
    for _ in range(batches):
        np.matmul(left, right, out=out)
    same_shape = 2.0 * batches * SCORING_BATCH * right.shape[0] * right.shape[1] / (time.perf_counter() - started)
    square = rng.standard_normal((2048, 2048)).astype(np.float32)
    square @ square
    started = time.perf_counter()
    square @ square
    return {
        "same_shape_gflops": same_shape / 1e9,
        "square_gflops": 2.0 * 2048**3 / (time.perf_counter() - started) / 1e9,
    }


def tf_top_k_users_per_second(recommender, sequences: Sequences, users: int = 8192) -> float:
    import tensorflow as tf

    from model_lib.serving.recommender import SCORING_BATCH

    inputs = {name: values[:users] for name, values in sequences.model_inputs().items()}
    vectors = recommender.scorer.encode(inputs).vectors
    matrix = recommender.scorer.item_matrix
    blocks = [vectors[s : s + SCORING_BATCH] @ matrix for s in range(0, len(vectors), SCORING_BATCH)]
    tf.math.top_k(blocks[0], K)
    started = time.perf_counter()
    for block in blocks:
        tf.math.top_k(block, K)
    return len(vectors) / (time.perf_counter() - started)
