"""What several tests share: real processes and servers, the Airflow pipeline, tiny data and models."""
