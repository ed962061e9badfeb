#!/usr/bin/env bash
# PostgreSQL's first start (docker-entrypoint-initdb.d): one role per service, each with only what it needs, their
# passwords read from the compose secrets (files, never command lines or environment variables):
#   airflow           owns the `airflow` database (Airflow's metadata)
#   mlflow            owns the `mlflow` database (tracking and registry store)
#   warehouse_writer  owns the `warehouse` database's tables (the publish and retention steps)
#   analyst           reads the warehouse: SELECT only, on today's and future tables
# The superuser (POSTGRES_USER) is used by nothing else.
set -euo pipefail
# psql reads each password from its file itself (\set with a backquoted command): none is on a command line.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
\set airflow `tr -d '\n' < ${SECRETS_DIR:-/run/secrets}/airflow_db`
\set mlflow `tr -d '\n' < ${SECRETS_DIR:-/run/secrets}/mlflow_db`
\set writer `tr -d '\n' < ${SECRETS_DIR:-/run/secrets}/warehouse_writer`
\set analyst `tr -d '\n' < ${SECRETS_DIR:-/run/secrets}/analyst`
CREATE ROLE airflow LOGIN PASSWORD :'airflow';
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow';
CREATE ROLE warehouse_writer LOGIN PASSWORD :'writer';
CREATE ROLE analyst LOGIN PASSWORD :'analyst';
CREATE DATABASE airflow OWNER airflow;
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE warehouse OWNER warehouse_writer;
REVOKE ALL ON DATABASE airflow, mlflow, warehouse FROM PUBLIC;
GRANT CONNECT ON DATABASE warehouse TO analyst;
\connect warehouse
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO analyst;
ALTER DEFAULT PRIVILEGES FOR ROLE warehouse_writer IN SCHEMA public GRANT SELECT ON TABLES TO analyst;
SQL
