"""Bytewax recovery: the snapshot store lives in a local directory of SQLite partitions."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir

from adapters import metrics

log = logging.getLogger("stockshift.recovery")

# How often the store is swept for evicted SKUs' rows (each sweep reads it whole, in a child
# process: 0.1 s for 1,000,000 rows), and how many rows one write transaction deletes:
# Bytewax's own writes wait for it, so it stays short (500 rows: about 5 ms; 100,000 pruned
# out of 1,000,000 in 1.0 s).
PRUNE_EVERY_S = 600.0
PRUNE_BATCH = 500


def recovery_config(
    directory: Path, backup_interval_s: float, partitions: int = 1
) -> RecoveryConfig:
    """Create the partitions on first use (one per process is the usual layout), then reuse."""
    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.glob("part-*.sqlite3")):
        init_db_dir(directory, partitions)  # type: ignore[no-untyped-call]
        log.info(
            "initialised recovery store", extra={"dir": str(directory), "partitions": partitions}
        )
    backup = timedelta(seconds=backup_interval_s)
    return RecoveryConfig(str(directory), backup_interval=backup)  # type: ignore[no-untyped-call]


def prune_tombstones(directory: Path, batch: int = PRUNE_BATCH) -> int:
    """Delete the rows Bytewax keeps for SKUs it evicted; returns how many went. Never call it
    in a process where Bytewax has the store open (`start_tombstone_pruner` says why).

    A SKU that leaves memory (idle eviction) leaves a row with no state behind, and Bytewax
    never deletes it: the store grows with every SKU ever held, and so does the pause at each
    snapshot's end, because Bytewax's garbage collection reads the whole store at every
    commit (measured: 15 ms at 7,400 rows, 180 ms at 200,000, 730 ms at 1,000,000). A
    producer cycling through new SKU ids would grow it without bound.

    Only tombstones older than the partition's committed epoch go. Bytewax's collection at
    that commit has already left each SKU at most one row up to it, so such a tombstone is its
    SKU's only row there: a resume from any epoch since finds either nothing for the SKU (as
    the tombstone said: not held) or a newer row, which stays.
    """
    return sum(_prune_partition(path, batch) for path in sorted(directory.glob("part-*.sqlite3")))


def _prune_partition(path: Path, batch: int) -> int:
    with closing(sqlite3.connect(path, timeout=10.0, isolation_level=None)) as conn:
        committed = conn.execute("SELECT MIN(commit_epoch) FROM commits").fetchone()[0]
        if committed is None:
            return 0
        deleted, after = 0, -1
        while True:
            # Read without a write lock (the store is in WAL mode), then delete by row id in a
            # short transaction, re-checking the row is still a tombstone before the commit.
            rowids = [
                row[0]
                for row in conn.execute(
                    "SELECT rowid FROM snaps WHERE rowid > ? AND ser_change IS NULL"
                    " AND snap_epoch < ? ORDER BY rowid LIMIT ?",
                    (after, committed, batch),
                )
            ]
            if not rowids:
                return deleted
            conn.execute("BEGIN IMMEDIATE")
            for rowid in rowids:
                deleted += conn.execute(
                    "DELETE FROM snaps WHERE rowid = ? AND ser_change IS NULL AND snap_epoch < ?",
                    (rowid, committed),
                ).rowcount
            conn.execute("COMMIT")
            after = rowids[-1]


def start_tombstone_pruner(directory: Path, every_s: float = PRUNE_EVERY_S) -> None:
    """Sweep the store at once (a restart after a long run starts clean) and then every
    `every_s`, from a daemon thread that ends with the process. A sweep that fails is logged
    and tried again at the next one: the flow never waits on it.

    Each sweep runs in a child process (`python -m adapters.recovery DIR`). Bytewax links its
    own copy of SQLite, and two copies in one process break SQLite's file locks: closing
    Python's connection released Bytewax's locks and let Python's copy checkpoint and delete
    the write-ahead log Bytewax was still writing, so a restart found no snapshot at all
    (sqlite.org/howtocorrupt.html, 2.2.1). Across processes the locks hold."""

    def sweep_forever() -> None:
        while True:
            pruned = sweep_in_child(directory)
            metrics.RECOVERY_TOMBSTONES_PRUNED.inc(pruned)
            if pruned:
                log.info("pruned evicted SKUs from the recovery store", extra={"rows": pruned})
            time.sleep(every_s)

    threading.Thread(target=sweep_forever, name="recovery-pruner", daemon=True).start()


def sweep_in_child(directory: Path) -> int:
    """Rows pruned by one sweep in a child process; 0, logged, when it fails."""
    command = [sys.executable, "-m", "adapters.recovery", str(directory)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PRUNE_EVERY_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("recovery store sweep failed", extra={"error": str(exc)})
        return 0
    answer = done.stdout.strip().splitlines()[-1:]
    if done.returncode != 0 or not answer or not answer[0].isdigit():
        tail = done.stderr.strip().splitlines()[-1:] or answer
        log.warning("recovery store sweep failed", extra={"error": " ".join(tail)})
        return 0
    return int(answer[0])


if __name__ == "__main__":
    # The child of `start_tombstone_pruner`: prints how many rows it deleted.
    print(prune_tombstones(Path(sys.argv[1])))
