"""The harness reaches real services (the base every integration test stands on)."""

from __future__ import annotations

import pytest
import redis
from confluent_kafka.admin import AdminClient

from adapters.lab.devservices import remove_keys
from tests.support.helpers import TEST_RUN, unique_prefix

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


def test_broker_answers_metadata(kafka_brokers: str) -> None:
    metadata = AdminClient({"bootstrap.servers": kafka_brokers}).list_topics(timeout=10)
    assert metadata.brokers
