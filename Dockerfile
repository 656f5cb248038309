# One image for both programs: `worker` (the default) and `producer`.
#   docker build -t pmoves-jellyfin-backfill .
#   docker run --rm --env-file .env pmoves-jellyfin-backfill                     # a worker
#   docker run --rm --env-file .env pmoves-jellyfin-backfill producer enqueue --all-missing --dry-run
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: install the pinned dependencies and the project into a venv without pip -------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only the runtime packages: no backfill_doubles, tests or bench (.dockerignore keeps them out of the context).
COPY requirements/runtime.lock ./requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY backfill ./backfill
COPY producer ./producer
COPY worker ./worker
# The lock is the whole runtime closure, each pinned with the sha256 of every wheel it may take: nothing
# is resolved here (--no-deps), a file whose hash is not in the lock is refused (--require-hashes), and
# `pip check` fails the build if the lock misses a requirement. Every locked distribution ships wheels
# for this platform (--only-binary): no compiler, no apt packages, in either stage. pip compiles the
# installed modules, so the read-only runtime never needs to write bytecode.
RUN python -m venv --without-pip /opt/backfill \
    && python -m pip --python /opt/backfill/bin/python install --no-cache-dir --no-deps --only-binary=:all: \
       --require-hashes -r requirements/runtime.lock \
    && python -m pip --python /opt/backfill/bin/python install --no-cache-dir --no-deps . \
    && python -m pip --python /opt/backfill/bin/python check

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
COPY --chmod=0555 deploy/healthcheck /usr/local/bin/backfill-healthcheck
WORKDIR /tmp
USER 10001:10001
EXPOSE 9108
# /healthz answers while the worker process is alive; the producer (a one-shot run) disables this check.
# The check is bash alone, no Python interpreter every 15 s: deploy/healthcheck says what each costs.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/backfill-healthcheck"]
CMD ["worker"]
