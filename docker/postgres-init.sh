#!/usr/bin/env bash
# Postgres initialisation for the docker-compose stack: the official postgres image runs every script in
# /docker-entrypoint-initdb.d once, on the first start with an empty data volume (never again: to re-run it,
# remove the volume with `docker compose down -v`).
#
# Creates, with passwords from the environment (docker-compose.yml passes them from .env):
#   cryptoflow_writer  the pipeline's role (settings: database.writer_role), owner of the database `cryptoflow`
#   cryptoflow_reader  the dashboard's read-only role (database.reader_role); `cryptoflow db start` (the
#                      compose service `db-init`) creates the schemas and grants it SELECT on gold and ops only
#   airflow            Airflow's metadata role, owner of the database `airflow`
# Passwords are handed to psql as variables and quoted by psql itself (:'var'), so any character works.
set -euo pipefail

: "${CRYPTOFLOW_DB_PASSWORD:?CRYPTOFLOW_DB_PASSWORD must be set (the writer role's password)}"
: "${CRYPTOFLOW_READER_PASSWORD:?CRYPTOFLOW_READER_PASSWORD must be set (the read-only role's password)}"
: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD must be set (Airflow's metadata role's password)}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  -v writer=cryptoflow_writer -v reader=cryptoflow_reader -v app_db=cryptoflow \
  -v writer_pw="$CRYPTOFLOW_DB_PASSWORD" -v reader_pw="$CRYPTOFLOW_READER_PASSWORD" \
  -v airflow_pw="$AIRFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE :"writer" LOGIN CREATEDB PASSWORD :'writer_pw';
-- window sorts and hash joins over millions of rows stay in memory (as in the embedded server)
ALTER ROLE :"writer" SET work_mem = '64MB';
CREATE ROLE :"reader" LOGIN PASSWORD :'reader_pw';
ALTER ROLE :"reader" SET default_transaction_read_only = on;
CREATE ROLE airflow LOGIN PASSWORD :'airflow_pw';

CREATE DATABASE :"app_db" OWNER :"writer";
CREATE DATABASE airflow OWNER airflow;

-- only the roles that need a database may connect to it
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"app_db" TO :"reader";
REVOKE ALL ON DATABASE airflow FROM PUBLIC;

\connect :"app_db"
GRANT ALL ON SCHEMA public TO :"writer";
SQL
