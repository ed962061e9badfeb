-- One PostgreSQL server, three databases owned by the platform's user (POSTGRES_USER): Airflow's metadata,
-- MLflow's tracking and registry store, and the warehouse the nightly recommendations are published to.
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
CREATE DATABASE warehouse;
