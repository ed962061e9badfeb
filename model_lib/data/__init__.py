"""Data: raw events -> validated events and padded sequences (Spark transforms), the item vocabulary, splits, and the
raw-event producers (MovieLens, the synthetic clickstream)."""
