"""The proposals ledger against a real Redis: one round trip claims a batch, skipping what
was delivered and marking the rest pending with their fields and TTL."""

from __future__ import annotations

import redis

from adapters.redis_store import Keys, ProposalLedger, RedisSettings
from state.records import Evidence, Proposal, ProposalStatus, SiteView
from tests.support.helpers import unique_prefix

_VIEW = SiteView("S01", 0, 0, 0, 0, 0, 0.5, 0.2, 3.0, 6.0)


def _proposal(proposal_id: str) -> Proposal:
    evidence = Evidence(_VIEW, _VIEW, 4.0, 1.0, 5.0, 8.0, 6.0, 2.0, 0.1, 3.4)
    return Proposal(
        proposal_id, "SKU-1", "S02", "S01", 2, 1_767_571_200_000, 1_767_578_400_000, "v1",
        ProposalStatus.NEEDS_APPROVAL, "short", evidence, ("e1",),
    )  # fmt: skip


def test_claim_skips_delivered_marks_the_rest_pending_and_delivery_is_recorded(
    redis_url: str,
) -> None:
    settings = RedisSettings(url=redis_url, prefix=unique_prefix("ledger", ":"))
    keys = Keys(settings.prefix)
    client = redis.Redis.from_url(redis_url)
    ledger = ProposalLedger(redis.Redis.from_url(redis_url), settings)
    done, waiting, new = _proposal("done"), _proposal("waiting"), _proposal("new")
    client.hset(keys.proposal("done"), mapping={"state": "delivered", "status": "approved"})
    client.hset(keys.proposal("waiting"), mapping={"state": "pending", "status": "proposed"})
    try:
        assert ledger.claim([done, waiting, new]) == {"done"}
        # Delivered stays as it was; pending (produced before a crash, never acknowledged)
        # is claimed again, so it is produced again.
        untouched = {b"state": b"delivered", b"status": b"approved"}
        assert client.hgetall(keys.proposal("done")) == untouched
        for pid in ("waiting", "new"):
            entry = client.hgetall(keys.proposal(pid))
            assert entry[b"state"] == b"pending"
            assert entry[b"status"] == b"needs_approval"
            assert entry[b"qty"] == b"2" and entry[b"from_site"] == b"S02"
            assert entry[b"created_at"] == b"2026-01-05T00:00:00.000+00:00"
            assert 0 < client.ttl(keys.proposal(pid)) <= settings.ledger_ttl_s
        assert ledger.claim([]) == set()
        assert ledger.mark_delivered([new])
        assert client.hget(keys.proposal("new"), "state") == b"delivered"
        # A status set by decisions since the claim is not overwritten by the delivery.
        assert client.hget(keys.proposal("new"), "status") == b"needs_approval"
        assert ledger.claim([new]) == {"new"}
    finally:
        client.delete(*(keys.proposal(pid) for pid in ("done", "waiting", "new")))


def test_claim_answers_none_while_redis_is_unreachable() -> None:
    """The caller then produces anyway and counts it (Kafka is the system of record)."""
    settings = RedisSettings(url="redis://127.0.0.1:1/0", prefix="unreachable:")
    ledger = ProposalLedger(redis.Redis.from_url(settings.url), settings)
    assert ledger.claim([_proposal("p")]) is None
    assert not ledger.mark_delivered([_proposal("p")])
