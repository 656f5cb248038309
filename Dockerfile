# One image for both programs: `worker` (the default) and `producer`.
#   docker build -t pmoves-jellyfin-backfill .
#   docker run --rm --env-file .env pmoves-jellyfin-backfill                     # a worker
#   docker run --rm --env-file .env pmoves-jellyfin-backfill producer enqueue --all-missing --dry-run
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: resolve and install the project and its dependencies into a venv without pip -----------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY backfill ./backfill
COPY backfill_doubles ./backfill_doubles
COPY producer ./producer
COPY worker ./worker
# Every dependency ships wheels for this platform: no compiler, no apt packages, in either stage.
# pip compiles the installed modules, so the read-only runtime never needs to write bytecode.
RUN python -m venv --without-pip /opt/backfill \
    && python -m pip --python /opt/backfill/bin/python install --no-cache-dir .

# --- runtime: the venv and nothing else -----------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="pmoves-jellyfin-backfill" \
      org.opencontainers.image.description="PMOVES Jellyfin metadata backfill: JetStream producer and workers"
ENV PATH=/opt/backfill/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BACKFILL_LOG_FORMAT=json \
    WORKER_METRICS_PORT=9108
RUN groupadd --system --gid 10001 backfill \
    && useradd --system --uid 10001 --gid backfill --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin backfill
COPY --from=builder /opt/backfill /opt/backfill
WORKDIR /tmp
USER 10001:10001
EXPOSE 9108
# /healthz answers while the worker process is alive; the producer (a one-shot run) disables this check.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WORKER_METRICS_PORT', '9108'), timeout=2)"]
CMD ["worker"]
