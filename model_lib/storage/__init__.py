"""Storage: the lake (atomic folder commits), the Spark session, the MLflow registry and the warehouse adapters."""
