"""`stockshift soak`: print the soak samples and whether memory, state and the recovery
store stayed flat once the churn reached steady state."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from adapters.lab.reliability import services_in
from adapters.lab.soak import LIFE_HOURS, SLOT_S, flat, run_soak, warmup_s


def run(minutes: float, rate: float, sample_s: float, idle_eviction_s: float) -> int:
    folder = Path(tempfile.mkdtemp(prefix="stockshift-soak-"))
    try:
        with services_in(folder) as services:
            result = run_soak(
                services,
                folder,
                minutes,
                rate,
                sample_s,
                idle_eviction_s,
                say=lambda text: print(f"... {text}", file=sys.stderr, flush=True),
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"soak: {minutes:g} min at {rate:g} events/s target, {result.births} SKUs born "
        f"(each lives {LIFE_HOURS * SLOT_S:.0f} s), idle eviction {idle_eviction_s:g} s"
    )
    print(
        f"{'t (s)':>6}{'produced':>10}{'accounted':>11}{'RSS MB':>8}{'keys':>7}"
        f"{'recov MB':>9}{'proposals':>10}{'p50 ms':>8}{'p99 ms':>8}"
    )
    for s in result.samples:
        print(
            f"{s.at_s:>6}{s.produced:>10}{s.accounted:>11}{s.rss_mb:>8}{s.keys_held:>7}"
            f"{s.recovery_mb:>9}{s.proposals:>10}{s.p50_ms:>8}{s.p99_ms:>8}"
        )
    warm_s = warmup_s(idle_eviction_s, sample_s)
    steady_samples = [s for s in result.samples if s.at_s >= warm_s]
    ok = result.accounted == result.produced and result.errors == 0
    print(
        f"events in {result.produced}, accounted {result.accounted}, producer errors "
        f"{result.errors}: {'PASS' if ok else 'FAIL'}"
    )
    if len(steady_samples) < 3:
        print(f"too short for a steady state (needs samples after {warm_s:.0f} s)")
        return 1
    for name in ("rss_mb", "keys_held", "recovery_mb"):
        middle, last, good = flat(steady_samples, name)
        ok &= good
        print(
            f"{name}: middle third {middle:.1f}, last third {last:.1f}: "
            f"{'flat' if good else 'NOT flat'} (within 10%)"
        )
    return 0 if ok else 1
