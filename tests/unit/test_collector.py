"""A flow process collects young garbage less often than CPython's default (flows.entry)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from flows.entry import YOUNG_COLLECTION_OBJECTS, tune_collector


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*before)


def test_only_the_young_generation_changes(thresholds: tuple[int, int, int]) -> None:
    tune_collector()
    assert gc.get_threshold() == (YOUNG_COLLECTION_OBJECTS, *thresholds[1:])
    assert YOUNG_COLLECTION_OBJECTS > thresholds[0]
    tune_collector()  # twice is the same as once
    assert gc.get_threshold() == (YOUNG_COLLECTION_OBJECTS, *thresholds[1:])
