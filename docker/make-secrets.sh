#!/usr/bin/env bash
# Writes the platform's secrets, one file each, into docker/secrets/ (git-ignored; mode 600): a random password per
# database role and for the Airflow admin, Airflow's JWT secret and Fernet key, and each service's libpq password
# file (PGPASSFILE) holding only the roles that service connects as. Run once before `docker compose up`; an
# existing file is kept, so re-running never changes a password a database already uses.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p secrets
chmod 700 secrets
umask 077
new() { [ -s "secrets/$1" ] || python3 -c "import secrets; print(secrets.token_urlsafe(32))" > "secrets/$1"; }
for name in postgres_superuser airflow_db mlflow_db warehouse_writer analyst airflow_admin airflow_jwt_secret; do
  new "$name"
done
[ -s secrets/airflow_fernet_key ] || python3 -c \
  "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())" > secrets/airflow_fernet_key
pgpass() { echo "postgres:5432:$1:$2:$(cat "secrets/$3")"; }
# Airflow's containers run the pipeline's tasks: Airflow's metadata and the warehouse writer (publish, retain).
{ pgpass airflow airflow airflow_db; pgpass warehouse warehouse_writer warehouse_writer; } > secrets/airflow.pgpass
pgpass mlflow mlflow mlflow_db > secrets/mlflow.pgpass
pgpass warehouse analyst analyst > secrets/analyst.pgpass
echo "secrets written to docker/secrets/ (never commit them)"
