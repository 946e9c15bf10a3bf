"""The harness reaches real services (the base every integration test stands on)."""

from __future__ import annotations

import pytest
import redis
from confluent_kafka.admin import AdminClient

from adapters.lab.devservices import drop_schemas, remove_keys
from tests.support.helpers import TEST_RUN, TEST_RUN_SCHEMA, unique_prefix, unique_schema

pytestmark = pytest.mark.integration


def test_redis_is_a_real_server(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = unique_prefix("stockshift-test:", "")
    client.set(key, "v", ex=30)
    assert client.get(key) == b"v"
    assert client.info("server")["redis_version"]


def test_the_runs_keys_are_removed_and_no_one_elses(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    mark = unique_prefix("cleanup")
    assert mark.startswith(TEST_RUN)
    ours = [f"{mark}{n}" for n in range(1_200)]  # more than one SCAN page and one DEL
    theirs = f"not-{mark}"
    client.mset(dict.fromkeys([*ours, theirs], "v"))
    try:
        remove_keys(redis_url, mark)
        assert client.exists(*ours) == 0
        assert client.get(theirs) == b"v"
    finally:
        client.delete(theirs)


def test_the_runs_schemas_are_dropped_and_no_one_elses(postgres_dsn: str) -> None:
    import psycopg

    mark = unique_schema("cleanup")
    assert mark.startswith(TEST_RUN_SCHEMA)
    ours, theirs = f"{mark}_a", f"not_{mark}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        for name in (ours, theirs):
            conn.execute(f"CREATE SCHEMA {name}")
            conn.execute(f"CREATE TABLE {name}.t (x int)")  # dropped with what it holds
        try:
            drop_schemas(postgres_dsn, mark)
            left = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}
            assert ours not in left and theirs in left
        finally:
            conn.execute(f"DROP SCHEMA IF EXISTS {theirs} CASCADE")


def test_broker_answers_metadata(kafka_brokers: str) -> None:
    metadata = AdminClient({"bootstrap.servers": kafka_brokers}).list_topics(timeout=10)
    assert metadata.brokers
