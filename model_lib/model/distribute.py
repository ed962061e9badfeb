"""Where a training process stands in a tf.distribute cluster, and the strategy it trains under.

Strategy (`distribution_strategy`): MultiWorkerMirroredStrategy when TF_CONFIG names a cluster of several tasks,
MirroredStrategy over the local GPUs when there are several, otherwise the default one-device strategy. On GPUs the
layers compute in mixed float16. The sequence files are dealt out to the workers: file i to input pipeline i mod n.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def distribution_strategy():
    """Create it before any other TensorFlow work in the process (see the module docstring for the choice)."""
    import keras
    import tensorflow as tf

    # Physical devices only: listing logical ones starts the runtime, and collective ops must be set up before that.
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if cluster_position(tf_config())[1] > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def strategy_name(strategy) -> str:
    import tensorflow as tf

    # isinstance, not type names: tf.distribute.MultiWorkerMirroredStrategy is named CollectiveAllReduceStrategy.
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "MirroredStrategy"
    return "default"


def cluster_position(tf_config: dict) -> tuple[int, int, bool]:
    """(input pipeline index, number of workers, is chief) from a TF_CONFIG dict; the chief, if any, comes first.

    Without a cluster this process is the only worker and the chief.
    """
    cluster = tf_config.get("cluster", {})
    task = tf_config.get("task", {})
    if task and task.get("type") not in ("chief", "worker"):
        raise ValueError(f"TF_CONFIG task type {task.get('type')!r}: this trainer runs only chief and worker tasks")
    count = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    if count <= 1 or not task:
        return 0, 1, True
    if task.get("type") == "chief":
        return 0, count, True
    index = int(task.get("index", 0)) + (1 if "chief" in cluster else 0)
    return index, count, index == 0


def tf_config() -> dict:
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def shard_files(files: list[Path], index: int, count: int) -> list[Path]:
    mine = files[index::count]
    if not mine:
        raise ValueError(
            f"{len(files)} sequence file(s) for {count} workers: every worker needs at least one file "
            "(the sessionize job writes a day's sequences as SEQUENCE_FILES files, two: raise it in jobs/sessionize.py)"
        )
    return mine
