"""The library the jobs share, by concern, in data-flow order: data (events, vocabulary, splits, sources), model
(network, losses, training), evaluation (metrics, baselines), serving (recommender, batch scoring) and storage
(lake, Spark, registry, warehouse), beside one configuration (config) and one contracts module (contracts)."""
