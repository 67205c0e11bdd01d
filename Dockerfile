# The image Dagster's Helm chart runs for each organisation's code server (a user deployment) and,
# through K8sRunLauncher, for that organisation's run pods. One image for all organisations: what
# differs between them is environment (the chart's per-deployment ConfigMap and Secret), never
# the image. No secret and no workspace in it: the chart writes the webserver's and daemon's
# workspace from its user deployments, and credentials come from each organisation's Secret.
#
# NOT BUILT OR RUN HERE: the machine this was written on reaches no container registry, so the
# base image could not be pulled; `docker build -t workforce-sync:0.1.0 .` is untested.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
# The project and its dependencies (dagster, dagster-postgres for the instance on PostgreSQL),
# plus dagster-k8s (extra `k8s`: dagster-k8s 0.29.*, dagster 1.13's) for the K8sRunLauncher;
# every dependency installs from a wheel, so no compiler.
RUN pip install ".[k8s]" \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin workforce \
    && mkdir -p /app/.local \
    && chown workforce /app/.local
# Paths in the settings (AGENT_MAPPINGS_FILE=config/..., ORGANISATIONS_FILE) are relative to the
# project folder the code is imported from: /app first on the path makes that /app, not site-packages.
ENV PYTHONPATH=/app

# Not root: the code needs to write nothing but /app/.local (and /tmp).
USER 10001
EXPOSE 3030
CMD ["dagster", "code-server", "start", "-m", "definitions", "-h", "0.0.0.0", "-p", "3030"]
