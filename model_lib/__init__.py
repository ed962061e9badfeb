"""The library the jobs share, one package per concern, in layers: a module imports only from its own layer's
package or from the layers below it (tests/unit/test_import_graph.py enforces it, imports inside functions too), and
nothing here imports jobs/, dags/, bench/ or Airflow.

    serving      a trained model with its vocabulary: top-K with reasons, the nightly workers' scoring, the other
                 nightly tables (anomalies, profiles, segments), the MLflow registry and the model artifact
    model        the Keras network, the forward passes that mirror it (scoring, numpy encoder), the training loop
    evaluation   the metrics, the baselines, and judging a model (given its scores) against them
    data         the Spark transforms of sessionization, vocabulary, splits, sequence files, sources
    run_report   a run's counts and seconds per step
    storage      lake commits, Spark sessions, the warehouse
    runtime      Java, Spark and Airflow environment
    config       the one settings object (in groups)
    ranking      what a served list may hold (the repeat policy) and the exact top-K
    contracts, redaction, progress
                 data contracts, the masking of secrets, the progress lines

Reading order follows the data: raw events -> data (sessionize) -> model (train) -> evaluation -> serving.
"""

# Lowest first; a package may import its own layer and every layer before it.
LAYERS = (
    ("contracts", "redaction", "progress"),
    ("ranking",),
    ("config",),
    ("runtime",),
    ("storage",),
    ("data", "run_report"),
    ("evaluation",),
    ("model",),
    ("serving",),
)
