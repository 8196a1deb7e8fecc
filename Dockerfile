# syntax=docker/dockerfile:1
# The cryptoflow image: the `cryptoflow` CLI, Airflow 3 (api-server, scheduler, dag-processor, triggerer,
# Celery worker), the Streamlit dashboard and the metrics endpoint, from the committed uv.lock.
# docker-compose.yml runs every service of ours from it; `docker run IMAGE cryptoflow --help` lists commands.
FROM python:3.11.13-slim-bookworm

# uv from PyPI, pinned (the same version the Makefile installs)
RUN pip install --no-cache-dir --disable-pip-version-check uv==0.13.9

# PROVIDERS__ENABLE_AIRFLOW_SECRETS=false is a switch (dlt's lookup of secrets in Airflow off), no secret:
# hadolint's DL3064 goes by the name alone.
# hadolint ignore=DL3064
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/cryptoflow/.venv \
    PATH=/opt/cryptoflow/.venv/bin:$PATH \
    CRYPTOFLOW_CONFIG=/opt/cryptoflow/config.yaml \
    AIRFLOW_HOME=/opt/airflow \
    RUNTIME__DLTHUB_TELEMETRY=false \
    SQLMESH__DISABLE_ANONYMIZED_ANALYTICS=true \
    PROVIDERS__ENABLE_AIRFLOW_SECRETS=false \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

WORKDIR /opt/cryptoflow

# Dependencies first (their layer is reused while only the project's code changes), exactly as locked.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-build --no-dev --no-install-project

# The project. It stays an editable install on purpose: pipelines/ finds app/, audits/, sqlmesh_project/ and
# airflow/dags next to itself (pipelines/runtime/dashboard_server.py, quality.py, transform.py, services.py).
COPY pipelines/ pipelines/
COPY app/ app/
COPY audits/ audits/
COPY sqlmesh_project/ sqlmesh_project/
COPY airflow/dags/ airflow/dags/
COPY config.yaml ./
RUN uv sync --frozen --no-build --no-dev

# Non-root. What the services write: Airflow's home (logs, the auth manager's passwords file), the project's
# state folder (dlt state, Soda config) and SQLMesh's cache. Named volumes mounted on these start with this
# ownership.
RUN groupadd --system --gid 50000 cryptoflow \
    && useradd --system --uid 50000 --gid cryptoflow --create-home --home-dir /home/cryptoflow cryptoflow \
    && mkdir -p /opt/airflow/logs /opt/airflow/auth /opt/cryptoflow/.cryptoflow \
    && chown -R cryptoflow:cryptoflow /opt/airflow /opt/cryptoflow/.cryptoflow /opt/cryptoflow/sqlmesh_project
# By number (the cryptoflow user and group above), so a runtime can tell it is not root (hadolint DL3066).
USER 50000:50000

# Airflow api-server, the dashboard, the metrics endpoint
EXPOSE 8080 8501 9108

CMD ["cryptoflow", "--help"]
