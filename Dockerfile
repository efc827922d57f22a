# syntax=docker/dockerfile:1
# riskmon worker image: `docker build -t riskmon .`; default command `riskmon worker`.
# Linted by hadolint and checked structurally in tests/unit/test_container_stack.py.

############################ build: a venv with riskmon and its dependencies ############################
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first (cached while only the code changes), then the package itself.
COPY pyproject.toml README.md ./
COPY streams ./streams
RUN pip install --no-cache-dir .

############################ runtime: slim, non-root ############################
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="riskmon" \
      org.opencontainers.image.description="Streaming real-time risk monitor for derivatives venues" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RISKMON_METRICS__HOST=0.0.0.0 \
    RISKMON_METRICS__PORT=9464 \
    RISKMON_WORKER__WEB_HOST=0.0.0.0 \
    RISKMON_WORKER__WEB_PORT=6066 \
    RISKMON_WORKER__DATA_DIR=/var/lib/riskmon/data \
    NUMBA_CACHE_DIR=/var/lib/riskmon/numba-cache

RUN groupadd --system --gid 10001 riskmon \
    && useradd --system --uid 10001 --gid riskmon --home-dir /var/lib/riskmon --shell /usr/sbin/nologin riskmon \
    && mkdir -p /var/lib/riskmon/data /var/lib/riskmon/numba-cache \
    && chown -R riskmon:riskmon /var/lib/riskmon

COPY --from=build /opt/venv /opt/venv
# The engine's numba kernels compile on first use (a few seconds) and cache the machine code in
# NUMBA_CACHE_DIR: the venv is not writable by the riskmon user, so the cache lives in its home.

USER 10001:10001
WORKDIR /var/lib/riskmon
VOLUME ["/var/lib/riskmon/data"]
EXPOSE 9464 6066

# Healthy = the worker's /metrics answers (the image has no curl; use the interpreter).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('RISKMON_METRICS__PORT', '9464'), timeout=4).read(1)"]

# SIGTERM -> faust shuts down cleanly (commit offsets, flush tables); see stop_grace_period.
STOPSIGNAL SIGTERM
ENTRYPOINT ["riskmon"]
CMD ["worker"]
