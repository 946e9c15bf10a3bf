"""The harness reaches real services (the base every integration test stands on)."""

from __future__ import annotations

import uuid

import pytest
import redis
from confluent_kafka.admin import AdminClient

pytestmark = pytest.mark.integration


def test_redis_is_a_real_server(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"stockshift-test:{uuid.uuid4().hex}"
    client.set(key, "v", ex=30)
    assert client.get(key) == b"v"
    assert client.info("server")["redis_version"]


def test_broker_answers_metadata(kafka_brokers: str) -> None:
    metadata = AdminClient({"bootstrap.servers": kafka_brokers}).list_topics(timeout=10)
    assert metadata.brokers
