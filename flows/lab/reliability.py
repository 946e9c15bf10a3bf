"""`stockshift reliability`: run the fault matrix and print one line per scenario."""

from __future__ import annotations

import sys

from adapters.lab.reliability import Line, Sizes, run_matrix


def print_lines(lines: list[Line]) -> None:
    print(
        f"{'fault':<66}{'events in':>10}{'accounted':>10}{'expected':>9}{'produced':>9}"
        f"{'dup':>5}  result"
    )
    for line in lines:
        print(
            f"{line.fault:<66}{line.events_in:>10}{line.events_accounted:>10}"
            f"{line.proposals_expected:>9}{line.proposals_produced:>9}"
            f"{line.duplicated_downstream:>5}  {'PASS' if line.passed else 'FAIL'}"
        )
        print(f"    {line.note}")


def run(quick: bool, runs: int | None = None, adversarial: bool = False) -> int:
    say = lambda text: print(f"... {text}", file=sys.stderr, flush=True)  # noqa: E731
    if adversarial:
        from adapters.lab.adversarial import run_adversarial

        lines = run_adversarial(say)
        print_lines(lines)
        return 0 if all(line.passed for line in lines) else 1
    sizes = Sizes.quick() if quick else Sizes()
    if runs is not None:
        sizes.kill_runs = runs
    lines = run_matrix(sizes, say=say)
    print_lines(lines)
    return 0 if all(line.passed for line in lines) else 1
