"""Turn a proposal's decision trail into an explanation a planner can read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_AFTER = {
    "approved": "approved by the execution service",
    "dispatched": "dispatched by the execution service",
    "rejected": "rejected by the execution service",
    "failed": "failed in execution",
    "expired": "expired unanswered; its reservation was released",
    "received": "received at the destination",
    "planner_approved": "approved by a planner",
    "planner_rejected": "rejected by a planner",
}


def _site(view: Mapping[str, Any]) -> str:
    text = (
        f"{view['site']}: on hand {view['on_hand']}, inbound {view['inbound']}, reserved in "
        f"{view['reserved_in']} / out {view['reserved_out']}, position {view['position']}; "
        f"demand {view['demand_per_hour']:.2f}/h (sd {view['demand_sd_per_hour']:.2f}); "
        f"reorder point {view['reorder_point']:.1f}, target {view['target']:.1f}"
    )
    if view.get("forecast_per_hour") is not None:  # records before 2026-12 lack both
        text += f"; forecast {view['forecast_per_hour']:.2f}/h as corrected by sales"
    if view.get("supplier_delay_hours"):
        text += f"; supplier deliveries counted {view['supplier_delay_hours']:.1f} h late"
    return text


def explain(proposal_id: str, trail: Sequence[Mapping[str, Any]]) -> str:
    """`trail` holds the decision records that name the proposal, oldest first."""
    if not trail:
        return f"No decision record mentions proposal {proposal_id}."
    origin = next((r for r in trail if r.get("outcome") in ("proposed", "needs_approval")), None)
    lines = [f"Proposal {proposal_id}"]
    if origin is None:
        lines.append("  (the decision that made it is no longer in the log; later records follow)")
    else:
        evidence = origin.get("evidence") or {}
        source = origin.get("trigger_source")
        where = (
            f" ({source['topic']} partition {source['partition']} offset {source['offset']})"
            if source
            else ""
        )
        lines += [
            f"  {origin['outcome']} at {origin['ts']} under policy {origin['policy_version']} "
            f"for SKU {origin['sku']}",
            f"  Why: {origin['detail']}",
            f"  Trigger: event {origin['trigger_event_id']}{where}",
        ]
        if evidence:
            lines += [
                "  Receiver " + _site(evidence["receiver"]),
                "  Sender   " + _site(evidence["sender"]),
                f"  Lane: {evidence['lead_hours']} h, {evidence['cost_per_unit']}/unit + "
                f"{evidence['fixed_cost']} per trip = {evidence['transfer_cost']:.2f}",
                f"  Benefit test: {evidence['expected_units_saved']:.2f} lost sales avoided, "
                f"{evidence['expected_units_lost_at_sender']:.2f} caused at the sender, margin "
                f"{evidence['unit_margin']}/unit -> net benefit {evidence['net_benefit']:.2f}",
            ]
        alternatives = origin.get("alternatives") or []
        if alternatives:
            lines.append("  Alternatives considered:")
            for alt in alternatives:
                why = alt.get("rejected_because") or f"lower net benefit {alt['net_benefit']:.2f}"
                lines.append(f"    from {alt['from_site']} ({alt['lead_hours']} h): {why}")
        for reason in origin.get("approval_reasons") or []:
            lines.append(f"  Needs approval: {reason}")
    later = [r for r in trail if r is not origin]
    if later:
        lines.append("  Afterwards:")
        for record in later:
            what = _AFTER.get(record.get("reason", ""), record.get("reason", ""))
            if record.get("actor"):
                what += (
                    f" ({record['actor']}"
                    + (f": {record['note']}" if record.get("note") else "")
                    + ")"
                )
            lines.append(f"    {record['ts']}: {what}")
    else:
        lines.append("  Afterwards: no answer from execution yet.")
    return "\n".join(lines)
