"""hub.heap: the collector settings the worker and the pure-step benchmark share."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hub import heap
from hub.settings import Settings


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_settle_freezes_the_heap_and_sets_only_the_first_threshold() -> None:
    gc.set_threshold(700, 11, 12)
    kept = [object(), {"a": [1]}]  # alive across settle: frozen with everything else
    heap.settle(12_345)
    assert gc.get_threshold() == (12_345, 11, 12)
    assert gc.get_freeze_count() > 0
    assert kept


@pytest.mark.usefixtures("restore_gc")
def test_settle_defaults_to_the_measured_threshold() -> None:
    heap.settle()
    assert gc.get_threshold()[0] == heap.DEFAULT_GEN0_THRESHOLD


def test_setting_reads_the_environment_and_refuses_less_than_cpythons_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().gc_gen0_threshold == heap.DEFAULT_GEN0_THRESHOLD
    monkeypatch.setenv("HUB_GC_GEN0_THRESHOLD", "20000")
    assert Settings().gc_gen0_threshold == 20_000
    monkeypatch.setenv("HUB_GC_GEN0_THRESHOLD", "100")
    with pytest.raises(ValueError, match="gc_gen0_threshold"):
        Settings()
