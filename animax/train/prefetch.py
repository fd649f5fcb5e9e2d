"""Reads a checkpointable batch iterator one or more batches ahead on a background thread,
so that making the next batch on the host overlaps the running train step.

The state it reports is the state *after the last batch handed out*, not after the last one
read ahead, so checkpoints and resume see exactly the batches the steps saw.
"""

from __future__ import annotations

import queue
import threading

_DONE = object()


class Prefetch:
    """Iterator over `source` (with get_state/set_state) with `depth` batches read ahead."""

    def __init__(self, source, depth: int = 2):
        self.source, self.depth = source, depth
        self._state = source.get_state()
        self._queue: queue.Queue | None = None      # these three exist while the reader runs
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._thread is None:   # started on first use, so set_state before it costs nothing
            self._start()
        item = self._queue.get()
        if item is _DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        batch, self._state = item
        return batch

    def get_state(self):
        return self._state

    def set_state(self, state) -> None:
        self.close()
        self.source.set_state(state)
        self._state = self.source.get_state()

    def close(self) -> None:
        """Stops the reader thread and drops the batches it read ahead, rewinding the source to
        just after the last batch handed out."""
        if self._thread is None:
            return
        self._stop.set()
        while self._thread.is_alive():   # unblock a reader waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(0.01)
        self._thread = None
        # Reading ahead moved the source past the batches handed out: rewind it.
        self.source.set_state(self._state)

    def _start(self) -> None:
        self._queue = queue.Queue(self.depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(self._queue, self._stop), daemon=True,
                                        name="animax-prefetch")
        self._thread.start()

    def _read(self, out: queue.Queue, stop: threading.Event) -> None:
        try:
            for batch in self.source:
                item = (batch, self.source.get_state())
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            out.put(_DONE)
        except BaseException as error:   # handed to the consumer, raised there
            out.put(error)
