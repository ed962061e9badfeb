"""A model version's user segments: fitted once when the version is trained (serving/profiles.py, Spark MLlib KMeans
and PCA over the training users' vectors), stored in the version's model_config.json, and applied to every user
each night in the scoring workers with numpy (no Spark job per night).

Fitting per version rather than per night keeps a segment's number meaning the same users from one night to the
next for as long as the champion serves, so analysts can follow a segment's size over days in SQL; a new champion
brings new segments (every nightly row carries its model_version).

    segment   the nearest centroid (Euclidean), as KMeansModel.transform assigns it
    x, y      the vector projected on the first two principal components, as PCAModel.transform does it
              (Spark's PCA projects without centring)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segments:
    centroids: np.ndarray  # (S, D) float64, one row per segment
    components: np.ndarray  # (D, 2) float64, the first two principal components
    # One dict per segment, in segment order: segment, users (training users in it), top_item_ids (the most
    # characteristic items, best first), description (their titles where item metadata exists), x, y (its mean).
    described: tuple[dict, ...]

    def assign(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, D) user vectors -> (segment (B,) int32, (B, 2) float64 position in the 2-D picture)."""
        vectors = np.asarray(vectors, np.float64)
        distances = (
            (vectors**2).sum(axis=1, keepdims=True) - 2.0 * vectors @ self.centroids.T + (self.centroids**2).sum(axis=1)
        )
        # argmin keeps the first of equal distances, as Spark's KMeans does.
        return distances.argmin(axis=1).astype(np.int32), vectors @ self.components

    def to_config(self) -> dict:
        return {
            "centroids": self.centroids.tolist(),
            "components": self.components.tolist(),
            "described": list(self.described),
        }

    @classmethod
    def from_config(cls, config: dict) -> Segments:
        return cls(
            np.asarray(config["centroids"], np.float64),
            np.asarray(config["components"], np.float64),
            tuple(config["described"]),
        )
