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

# Runtime stage: non-root, configs copied in, Bytewax's runner as the entry point.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 stockshift
COPY --from=build /opt/venv /opt/venv
COPY configs /app/configs
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    STOCKSHIFT_NETWORK=/app/configs/network.toml \
    STOCKSHIFT_POLICY=/app/configs/policies/default.toml \
    PYTHONUNBUFFERED=1
USER stockshift
EXPOSE 9108
# STOCKSHIFT_BROKERS (and STOCKSHIFT_KAFKA_* librdkafka settings) come from the environment.
# Topics must exist (run `stockshift run` once, or create them with your own tooling).
ENTRYPOINT ["python", "-m", "bytewax.run", "flows.entry:from_environment()"]
CMD ["-w", "1"]
