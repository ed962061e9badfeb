#!/usr/bin/env bash
# One-shot set-up before the Airflow services start: migrate the metadata database, and write the admin
# password (the compose secret airflow_admin) where the simple auth manager reads it.
set -euo pipefail
airflow db migrate
umask 077
python - <<'PY'
import json, os
path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w") as f:
    with open(os.environ["AIRFLOW_ADMIN_PASSWORD_FILE"]) as secret:
        json.dump({"admin": secret.read().strip()}, f)
PY
mkdir -p "$RECO_DATA_DIR/lake" "$RECO_DATA_DIR/mlflow/artifacts"
echo "Airflow metadata ready; log in as admin with the password in docker/secrets/airflow_admin"
