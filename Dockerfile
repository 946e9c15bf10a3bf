# syntax=docker/dockerfile:1
# Build stage: a wheel with the decision core compiled by mypyc (setup.py; a C compiler and
# mypy in a build-only virtualenv), installed with its dependencies in the runtime virtualenv.
FROM python:3.11-slim AS build
WORKDIR /src
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir "setuptools>=77" wheel "mypy>=1.10,<3"
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml setup.py README.md ./
COPY flows flows
COPY operators operators
COPY state state
COPY adapters adapters
RUN STOCKSHIFT_COMPILE=1 /opt/build/bin/pip wheel --no-cache-dir --no-build-isolation \
        --no-deps -w /wheels . \
    && pip install --no-cache-dir /wheels/*.whl

# Runtime stage: non-root, configs copied in, `stockshift run` as the one entry point.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 stockshift \
    && mkdir -p /var/lib/stockshift/recovery \
    && chown -R stockshift /var/lib/stockshift
COPY --from=build /opt/venv /opt/venv
COPY configs /app/configs
WORKDIR /app
# Recovery is on: SKU state and input offsets are snapshotted together into the volume, so
# a restarted container resumes both (the volume is a trust boundary: docs/security.md).
ENV PATH=/opt/venv/bin:$PATH \
    STOCKSHIFT_NETWORK=/app/configs/network.toml \
    STOCKSHIFT_POLICY=/app/configs/policies/default.toml \
    STOCKSHIFT_POLICIES_DIR=/app/configs/policies \
    STOCKSHIFT_RECOVERY_DIR=/var/lib/stockshift/recovery \
    STOCKSHIFT_METRICS_PORT=9108 \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/stockshift/recovery"]
USER stockshift
EXPOSE 9108
# Liveness: the metrics port answers /healthz (readiness, /readyz, is for orchestrators).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]
# STOCKSHIFT_BROKERS (and STOCKSHIFT_KAFKA_* librdkafka settings) come from the environment.
ENTRYPOINT ["stockshift", "run"]
