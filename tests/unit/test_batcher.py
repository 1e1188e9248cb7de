"""The batcher behind the live stream's connects: one call of the work for the items asked
together, each caller gets its own result (or its own exception)."""

from __future__ import annotations

import asyncio
import threading

from clarion.api.batch import Batcher


class Work:
    """Squares, refusing negative numbers; notes each batch it was called with."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.fail = fail

    def __call__(self, items):
        self.batches.append(list(items))
        self.threads.add(threading.get_ident())
        if self.fail:
            raise RuntimeError("database down")
        return [ValueError(f"negative: {i}") if i < 0 else i * i for i in items]


def test_items_asked_together_are_done_in_one_call_off_the_loop_each_with_its_result():
    work = Work()

    async def scenario():
        batcher = Batcher(work)
        futures = [batcher.get(i) for i in range(200)]  # the same tick: a herd
        return await asyncio.gather(*futures), threading.get_ident()

    results, loop_thread = asyncio.run(scenario())

    assert results == [i * i for i in range(200)]
    assert work.batches == [list(range(200))]
    assert loop_thread not in work.threads


def test_an_error_reaches_only_its_own_caller_and_a_failed_batch_reaches_all():
    async def scenario(work):
        batcher = Batcher(work)
        futures = [batcher.get(i) for i in (2, -1, 3)]
        return await asyncio.gather(*futures, return_exceptions=True)

    two, refused, three = asyncio.run(scenario(Work()))
    failed = asyncio.run(scenario(Work(fail=True)))

    assert (two, three) == (4, 9) and str(refused) == "negative: -1"
    assert [str(e) for e in failed] == ["database down"] * 3


def test_batches_are_bounded_and_items_arriving_during_one_go_in_the_next():
    work = Work()

    async def scenario():
        batcher = Batcher(work, size=50, in_flight=1)
        first = [batcher.get(i) for i in range(120)]
        await asyncio.sleep(0)
        later = [batcher.get(i) for i in range(120, 130)]
        return await asyncio.gather(*first, *later)

    results = asyncio.run(scenario())

    assert results == [i * i for i in range(130)]
    assert all(len(b) <= 50 for b in work.batches)
    assert sorted(i for b in work.batches for i in b) == list(range(130))


def test_a_caller_that_left_does_not_break_the_others():
    work = Work()

    async def scenario():
        batcher = Batcher(work, linger=0.01)
        gone, staying = batcher.get(1), batcher.get(2)
        gone.cancel()
        return await staying

    assert asyncio.run(scenario()) == 4


def test_a_batcher_serves_one_loop_after_another():
    batcher = Batcher(Work())

    async def scenario():
        return await batcher.get(3)

    assert [asyncio.run(scenario()) for _ in range(2)] == [9, 9]
