"""Batch prefetching (animax.train.prefetch): the reported state is that of the batches handed out;
the end and errors of the source arrive in order."""

import time

import pytest


class _Counter:
    """A checkpointable source of batches 0, 1, 2, ... that fails at `fail_at` and ends at `stop`."""

    def __init__(self, stop=None, fail_at=None):
        self.next, self.stop, self.fail_at = 0, stop, fail_at

    def __iter__(self):
        return self

    def __next__(self):
        if self.next == self.fail_at:
            raise ValueError(f"bad record {self.next}")
        if self.next == self.stop:
            raise StopIteration
        self.next += 1
        return self.next - 1

    def get_state(self):
        return {"next": self.next}

    def set_state(self, state):
        self.next = state["next"]


def test_prefetch_reports_the_state_of_the_batches_handed_out_not_those_read_ahead():
    from animax.train.prefetch import Prefetch

    source = _Counter()
    ahead = Prefetch(source, depth=3)
    assert [next(ahead) for _ in range(4)] == [0, 1, 2, 3]
    assert ahead.get_state() == {"next": 4}
    deadline = time.monotonic() + 10
    while source.next <= 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 4 < source.next <= 4 + 3 + 1     # the reader runs ahead: `depth` queued, one in hand
    state = ahead.get_state()
    ahead.set_state({"next": 10})           # rewinds: the batches read ahead are dropped
    assert next(ahead) == 10
    resumed = Prefetch(_Counter(), depth=3)
    resumed.set_state(state)
    assert [next(resumed) for _ in range(3)] == [4, 5, 6]
    ahead.close()
    resumed.close()


def test_prefetch_ends_with_its_source_and_raises_its_errors_in_order():
    from animax.train.prefetch import Prefetch

    assert list(Prefetch(_Counter(stop=5), depth=2)) == [0, 1, 2, 3, 4]
    failing = Prefetch(_Counter(fail_at=2), depth=2)
    assert [next(failing), next(failing)] == [0, 1]
    with pytest.raises(ValueError, match="bad record 2"):
        next(failing)
