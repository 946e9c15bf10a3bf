"""Confluent-Schema-Registry-framed Avro beside JSON, with confluent-kafka's maintained
serializers (`confluent_kafka.schema_registry.avro`).

Inputs: with `STOCKSHIFT_SCHEMA_REGISTRY_URL` set, a message whose value starts with the
registry's frame (magic byte 0, then the schema id) is decoded with the writer's schema
from the registry; any other stays JSON. The decoded record is checked by the same parser
as JSON (operators.parse), and a message that cannot be decoded is dead-lettered with its
original bytes (`bad_avro`). Outputs: with `STOCKSHIFT_OUTPUT_FORMAT=avro`, proposals are
written in Avro (configs/schemas/avro/proposal.avsc, registered under `<topic>-value`;
`evidence` is its JSON object as a string); decisions, findings and dead letters stay JSON.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from adapters.settings import DEFAULT_CONFIG_DIR
from operators.codec import KafkaMessage, proposal_dict
from state.records import DeadLetter, Proposal, RawMessage

AVRO_SCHEMAS = DEFAULT_CONFIG_DIR / "schemas" / "avro"
MAGIC = 0
AVRO_CONTENT_TYPE = b"application/vnd.confluent.avro"


def framed(value: bytes | None) -> bool:
    """The registry's wire format: magic byte 0 and a 4-byte schema id before the record."""
    return value is not None and len(value) > 5 and value[0] == MAGIC


class AvroCodec:
    def __init__(self, registry_url: str, schemas: Path = AVRO_SCHEMAS) -> None:
        self._client = SchemaRegistryClient({"url": registry_url})
        self._decode = AvroDeserializer(self._client)
        self._proposal = AvroSerializer(
            self._client,
            (schemas / "proposal.avsc").read_text(),
            conf={"auto.register.schemas": True},
        )

    def decode_raw(self, raw: RawMessage) -> RawMessage | DeadLetter:
        """A framed message decoded into `raw.decoded`; others unchanged."""
        if not framed(raw.value):
            return raw
        try:
            record = self._decode(raw.value, SerializationContext(raw.topic, MessageField.VALUE))
        except Exception as exc:  # the registry client raises several kinds; all mean "cannot"
            return DeadLetter(
                source_topic=raw.topic,
                partition=raw.partition,
                offset=raw.offset,
                key=raw.key,
                payload=raw.value,
                error=f"Avro message cannot be decoded: {exc}"[:500],
                reason="bad_avro",
                received_at_ms=raw.received_at_ms,
                timestamp_ms=raw.timestamp_ms,
            )
        if not isinstance(record, dict):
            return replace(raw, decoded={})
        return replace(raw, decoded={k: v for k, v in record.items() if v is not None})

    def encode_proposal(self, proposal: Proposal, topic: str) -> KafkaMessage:
        body: dict[str, Any] = proposal_dict(proposal)
        body["evidence"] = orjson.dumps(body["evidence"]).decode()
        body.setdefault("traceparent", None)
        value = self._proposal(body, SerializationContext(topic, MessageField.VALUE))
        headers = [("content-type", AVRO_CONTENT_TYPE)]
        if proposal.traceparent:
            headers.append(("traceparent", proposal.traceparent.encode()))
        return KafkaMessage(proposal.sku.encode(), value, tuple(headers))
