# syntax=docker/dockerfile:1
# Build stage: a wheel and its dependencies in a virtualenv.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY flows flows
COPY operators operators
COPY state state
COPY adapters adapters
RUN pip install --no-cache-dir .

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
