"""Evaluation: the one metrics module (and the repeat policy) and the baselines scored the same way."""
