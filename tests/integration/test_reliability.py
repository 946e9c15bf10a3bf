"""The fault matrix (`stockshift reliability --quick`) in CI: kill -9 with recovery, broker
unreachable at start and mid-run, Redis killed and restarted, bad input, control abuse.
Each scenario reconciles proposals, ledger and every SKU-site's live state against an
uninterrupted run of the same input."""

from __future__ import annotations

import pytest

from adapters.lab.reliability import Sizes, run_matrix
from flows.lab.reliability import print_lines

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_fault_matrix_every_line_passes(capsys: pytest.CaptureFixture[str]) -> None:
    lines = run_matrix(Sizes.quick())
    print_lines(lines)
    report = capsys.readouterr().out
    faults = [line.fault for line in lines]
    assert len(lines) == 7, faults
    assert sum(f.startswith("kill -9") for f in faults) == 2
    failed = [line for line in lines if not line.passed]
    assert not failed, report
    for line in lines:
        assert line.events_accounted == line.events_in, line
        assert line.proposals_produced == line.proposals_expected > 0, line
