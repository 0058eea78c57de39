# The one image of the production topology (docker-compose.yaml, docs/deployment.md): Airflow's components, the
# Celery workers, the MLflow server and the prediction service all run it with different commands.
#
#   docker build -t airflow-mlops-loop:latest .      # or: docker compose build
#
# The environment is exactly requirements.lock (the set the test suite runs), installed with uv into /opt/venv;
# the repository's code (pipelines/, dags/, plugins/, expectations/) is baked in at /opt/mlops.
FROM python:3.11-slim-bookworm

ARG UV_VERSION=0.13.9
ARG MLOPS_UID=50000

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/mlops \
    MLFLOW_DISABLE_TELEMETRY=true \
    AIRFLOW_HOME=/opt/airflow \
    MLOPS_HOME=/runtime

# Dependencies first (this layer changes only with the lock file). `uv pip sync` installs exactly the lock's set
# into a virtual environment and compiles its bytecode, so no process recompiles imports at start (Airflow
# re-imports a lot on every command; the non-root user could not write __pycache__ here anyway).
COPY requirements.lock /tmp/requirements.lock
RUN /usr/local/bin/python -m pip install "uv==${UV_VERSION}" \
    && /usr/local/bin/python -m venv --without-pip "${VIRTUAL_ENV}" \
    && uv pip sync --python "${VIRTUAL_ENV}/bin/python" /tmp/requirements.lock \
    && /usr/local/bin/python -m pip uninstall -y uv \
    && rm /tmp/requirements.lock

# A non-root user; the folders the compose file mounts volumes on belong to it (a new named volume takes the
# owner of its mount point from the image).
RUN groupadd --gid "${MLOPS_UID}" mlops \
    && useradd --uid "${MLOPS_UID}" --gid mlops --home-dir /opt/airflow --create-home --shell /bin/bash mlops \
    && mkdir -p /opt/mlops /runtime /mlflow-artifacts /opt/airflow/logs /opt/airflow/auth \
    && chown -R mlops:mlops /runtime /mlflow-artifacts /opt/airflow \
    && chmod 700 /opt/airflow/auth

# The code (see .dockerignore), compiled to bytecode as root, readable by everyone.
COPY pyproject.toml /opt/mlops/
COPY pipelines /opt/mlops/pipelines
COPY dags /opt/mlops/dags
COPY plugins /opt/mlops/plugins
COPY expectations /opt/mlops/expectations
# What `lineage` records as the code and environment of a training run: the lock file's hash, and the commit the
# image was built from (`docker compose build --build-arg GIT_COMMIT=$(git rev-parse HEAD)`; "unknown" otherwise).
COPY requirements.lock /opt/mlops/
ARG GIT_COMMIT=unknown
RUN printf '%s\n' "${GIT_COMMIT}" > /opt/mlops/COMMIT
RUN python -m compileall -q /opt/mlops/pipelines /opt/mlops/dags /opt/mlops/plugins \
    && chmod -R a+rX /opt/mlops

# Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER ${MLOPS_UID}:${MLOPS_UID}
WORKDIR /opt/mlops
EXPOSE 8080 8793 8794 5000 8000
CMD ["python", "-m", "pipelines", "--help"]
