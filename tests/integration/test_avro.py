"""Registry-framed Avro beside JSON, on the real flow and broker, against the harness's
Confluent-compatible schema registry (adapters/lab/registry.py): Avro sales and JSON counts
make the same proposal as all-JSON input, the proposal is written in Avro, and a framed
message that cannot be decoded is dead-lettered with its original bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from adapters.avro import AVRO_SCHEMAS
from adapters.kafka import read_topic
from adapters.lab import registry as registry_server
from adapters.lab.devservices import free_port
from adapters.lab.flowproc import FlowHarness

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
T0 = 1_767_225_600_000
HOUR = 3_600_000


@pytest.fixture
def registry_url() -> Iterator[str]:
    port = free_port()
    server = registry_server.serve(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()


def run_once(
    brokers: str, prefix: str, folder: Path, registry_url: str, avro: bool
) -> tuple[list[Any], SchemaRegistryClient]:
    """The README's example (A 300, B 91, 50 h of sales, damage at B), sales in Avro or
    JSON, plus one framed message that cannot be decoded; returns the proposals produced."""
    folder.mkdir(parents=True, exist_ok=True)
    flow = FlowHarness(
        brokers,
        prefix,
        folder,
        STOCKSHIFT_SCHEMA_REGISTRY_URL=registry_url,
        STOCKSHIFT_OUTPUT_FORMAT="avro",
    )
    client = SchemaRegistryClient({"url": registry_url})
    pos = AvroSerializer(client, (AVRO_SCHEMAS / "pos.avsc").read_text())
    flow.start()
    try:

        def send(kind: str, body: dict[str, Any], as_avro: bool) -> None:
            topic = prefix + kind
            context = SerializationContext(topic, MessageField.VALUE)
            value = pos(body, context) if as_avro else orjson.dumps(body)
            flow.producer.produce(topic, value, body["sku"].encode(), timestamp=body["ts"])

        for s, q in (("A", 300), ("B", 91)):
            send(
                "inventory",
                {
                    "event_id": f"c-{s}",
                    "ts": T0,
                    "sku": "SKU-1",
                    "site": s,
                    "type": "snapshot",
                    "on_hand": q,
                },
                False,
            )
        flow.producer.flush(10)
        flow.wait_live()
        for h in range(50):
            for s in ("A", "B"):
                send(
                    "pos",
                    {
                        "event_id": f"s-{s}-{h}",
                        "ts": T0 + h * HOUR + HOUR // 2,
                        "sku": "SKU-1",
                        "site": s,
                        "qty": 1,
                    },
                    avro,
                )
        flow.producer.produce(prefix + "pos", GARBAGE, b"SKU-1", timestamp=T0 + 50 * HOUR)
        flow.last_ts = T0 + 50 * HOUR
        flow.producer.flush(10)
        flow.wait_live()
        send(
            "inventory",
            {
                "event_id": "d1",
                "ts": T0 + 50 * HOUR,
                "sku": "SKU-1",
                "site": "B",
                "type": "adjustment",
                "delta": -15,
            },
            False,
        )
        flow.producer.flush(10)
        return read_topic(brokers, prefix + "proposals", 1, timeout=60), client
    finally:
        flow.stop()


GARBAGE = b"\x00\x00\x00\x03\xe7garbage"


def test_avro_in_and_out(
    kafka_brokers: str, topic_prefix: str, tmp_path: Path, registry_url: str
) -> None:
    avro_out, client = run_once(kafka_brokers, topic_prefix, tmp_path / "a", registry_url, True)
    json_out, _ = run_once(kafka_brokers, "j" + topic_prefix, tmp_path / "j", registry_url, False)
    decode = AvroDeserializer(client)

    def read(message: Any, prefix: str) -> dict[str, Any]:
        assert dict(message.headers() or [])["content-type"] == b"application/vnd.confluent.avro"
        found: dict[str, Any] = decode(
            message.value(), SerializationContext(prefix + "proposals", MessageField.VALUE)
        )
        return found

    assert len(avro_out) == len(json_out) == 1
    from_avro, from_json = read(avro_out[0], topic_prefix), read(json_out[0], "j" + topic_prefix)
    assert from_avro == from_json  # Avro sales decide exactly as JSON ones
    assert (from_avro["from_site"], from_avro["to_site"], from_avro["status"]) == (
        "A",
        "B",
        "proposed",
    )
    assert orjson.loads(from_avro["evidence"])["receiver"]["site"] == "B"
    letters = read_topic(
        kafka_brokers,
        topic_prefix + "dlq",
        5,
        timeout=10,
        keep=lambda m: dict(m.headers())["stockshift.reason"] == b"bad_avro",
    )
    assert [m.value() for m in letters] == [GARBAGE]  # the original bytes, as sent
