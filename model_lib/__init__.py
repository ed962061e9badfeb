"""The library the jobs share: configuration, contracts, the Keras model, metrics, scoring, registry, warehouse."""
