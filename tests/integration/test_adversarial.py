"""Issue #18's table (`stockshift reliability --adversarial`) in CI: each hostile input against
the real process, broker and Redis; every row must keep the flow alive, account for every
bad message and leave the good SKUs' decisions equal to a clean run."""

from __future__ import annotations

import pytest

from adapters.lab.adversarial import run_adversarial
from flows.lab.reliability import print_lines

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_every_adversarial_row_passes(capsys: pytest.CaptureFixture[str]) -> None:
    lines = run_adversarial()
    print_lines(lines)
    report = capsys.readouterr().out
    numbers = [line.fault.split(":")[0] for line in lines]
    assert numbers == [str(n) for n in range(1, 13)], report
    failed = [line for line in lines if not line.passed]
    assert not failed, report
    for line in lines:
        assert line.events_accounted == line.events_in > 0, line
        assert line.proposals_produced == line.proposals_expected > 0, line
