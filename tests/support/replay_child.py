"""A child process for tests/integration/test_compiled_core.py: replays a simulated
network's events through the engine with whichever core its path imports, and prints what
the events caused as digests (and whether the core was compiled).

python replay_child.py SKUS EVENTS [--dump FILE | --load FILE]
  --dump: replay the first half, write each SKU's recovery snapshot (operators.snapshot) to FILE
  --load: start from FILE's states and replay the second half
Digests cover the second half's outputs only, so all ways of reaching it compare.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
from pathlib import Path

from adapters.lab.compiled import core_is_compiled
from adapters.lab.simulator import make_network
from flows.lab.bench import BENCH_POLICY, bench_scenario, bench_stream
from operators.codec import decision_json, encode_finding, encode_proposal
from operators.engine import DecisionContext, step
from operators.parse import parse_object
from operators.snapshot import decode, encode
from state.sku import SkuState


def main(argv: list[str]) -> None:
    skus, n_events = int(argv[0]), int(argv[1])
    mode, path = (argv[2], Path(argv[3])) if len(argv) > 3 else ("", None)
    scenario = bench_scenario(skus, n_events)
    network = make_network(scenario)
    sites = frozenset(network.sites)
    events = [parse_object(kind, body, sites) for kind, body in bench_stream(scenario, n_events)]
    half = len(events) // 2
    ctx = DecisionContext.build(network, BENCH_POLICY)
    states: dict[str, SkuState] = {}
    start, end = 0, len(events)
    if mode == "--load" and path is not None:
        written: dict[str, bytes] = pickle.loads(path.read_bytes())
        states = {sku: decoded for sku, data in written.items() if (decoded := decode(data))}
        start = half
    elif mode == "--dump":
        end = half
    kinds = ("proposals", "decisions", "positions", "findings")
    digests = {kind: hashlib.blake2b(digest_size=8) for kind in kinds}
    counts = dict.fromkeys(digests, 0)
    # What the sinks publish, as the codec writes it (orjson once crashed on compiled
    # records: the records' reprs matched, their JSON was never made).
    published = hashlib.blake2b(digest_size=8)
    pickled = hashlib.blake2b(digest_size=8)
    for index in range(start, end):
        event = events[index]
        states[event.sku], output = step(states.get(event.sku), event, ctx)
        if index < half:
            continue
        for kind, digest in digests.items():
            for record in getattr(output, kind):
                digest.update(repr(record).encode())
                counts[kind] += 1
        for proposal in output.proposals:
            published.update(encode_proposal(proposal).value or b"")
        for decision in output.decisions:
            published.update(decision_json(decision))
        for record in (*output.proposals, *output.decisions):
            # As negotiation's state and recovery snapshots keep them: the same bytes from
            # either core, and back whole.
            data = pickle.dumps(record)
            if repr(pickle.loads(data)) != repr(record):
                raise SystemExit(f"a {type(record).__name__} does not unpickle whole")
            pickled.update(data)
        for finding in output.findings:
            published.update(encode_finding(finding)[1])
    if mode == "--dump" and path is not None:
        path.write_bytes(pickle.dumps({sku: encode(state) for sku, state in states.items()}))
    print(json.dumps({
        "compiled": core_is_compiled(),
        "counts": counts,
        "digests": {
            **{kind: digest.hexdigest() for kind, digest in digests.items()},
            "published": published.hexdigest(),
            "pickled": pickled.hexdigest(),
        },
    }))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
