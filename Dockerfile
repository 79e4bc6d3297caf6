# syntax=docker/dockerfile:1
# NEXUS Edge: one image with every console script (nexus-gateway, nexus-ingestion, nexus-core,
# nexus-normalizer, nexus-operator, nexus). Multi-stage: wheels are built in a stage with the build tools, the runtime
# stage gets only the virtualenv. Non-root (uid 10001), no secrets (DSNs, keys and passwords come from
# the environment at run time: helm/nexus-edge), read-only root file system friendly (writes go to /tmp
# and the spool volume). tests/deploy/test_dockerfile.py checks this file (hadolint and a parser).
# The web console (console/, Vite) is built in a node stage from its lock file; its assets go where
# gateway_core serves them from (gateway_core/console.py: console/dist beside the installed packages).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS console
WORKDIR /console
# packages first (a layer that changes only with the lock file), then the sources
COPY console/package.json console/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY console ./
RUN npm run build

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/nexus
# dependencies first (a layer that changes only with pyproject.toml), then the code
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY nexus ./nexus
COPY normalizer ./normalizer
COPY gateway ./gateway
COPY ingestion ./ingestion
COPY gateway_core ./gateway_core
COPY devtools ./devtools
COPY nexus_operator ./nexus_operator
# the operator extra (kopf) too: one image for every workload of the chart
RUN /opt/nexus/bin/pip install --no-compile ".[operator]" \
    && /opt/nexus/bin/python -m compileall -q /opt/nexus/lib

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="NEXUS Edge" \
      org.opencontainers.image.description="PLC gateways, ingestion workers, normalizer and configuration service" \
      org.opencontainers.image.licenses="Proprietary"
ENV PATH=/opt/nexus/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 nexus \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nexus \
    && install -d -o 10001 -g 10001 /var/lib/nexus/spool
COPY --from=build /opt/nexus /opt/nexus
COPY --from=console /console/dist /opt/nexus/lib/python3.11/site-packages/console/dist
# every console script of pyproject.toml is there and starts (tests/deploy checks this list)
RUN for script in nexus nexus-gateway nexus-ingestion nexus-core nexus-normalizer nexus-operator; do \
      command -v "$script" >/dev/null || { echo "missing console script $script" >&2; exit 1; }; \
    done
USER 10001:10001
WORKDIR /var/lib/nexus
# ops port of every daemon in the chart; nexus-core's REST API
EXPOSE 9100 8080
# the daemon is the pod's command (nexus-gateway, nexus-ingestion, nexus-core, nexus-normalizer, nexus-operator)
CMD ["nexus", "--help"]
