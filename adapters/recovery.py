"""Bytewax recovery: the snapshot store lives in a local directory of SQLite partitions."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir

log = logging.getLogger("stockshift.recovery")


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
