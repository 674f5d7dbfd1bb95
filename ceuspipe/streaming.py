"""Threads that hand items to each other through bounded channels, and fail together.

A streaming stage (decode, infer, encode) runs in a thread of a
:class:`StageGroup` and talks to its neighbours through :class:`Channel`
objects. Each end of a channel notices when the other end stopped:

* the producer's :meth:`Channel.put` raises :class:`ChannelClosed` once the
  consumer has gone (it finished early, failed, or the run is being stopped);
* the consumer's :meth:`Channel.get` raises :class:`ChannelClosed` once the
  producer has gone without finishing, and :class:`EndOfStream` once it
  finished normally and every item was taken.

When any stage raises, the group closes every channel, so every other stage
wakes up within one poll interval and ends; :meth:`StageGroup.join` then
re-raises the first real failure (not the :class:`ChannelClosed` it caused
elsewhere). Memory is bounded by the channels' sizes. Waiting is done in
short timed steps, so a signal (Ctrl-C, SIGTERM) reaches the main thread
promptly even while it waits on a channel.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Callable, Iterator

log = logging.getLogger("ceuspipe")

#: Seconds between checks of the other end while waiting on a full or empty channel.
POLL_S = 0.1
#: Seconds :meth:`StageGroup.join` waits for each thread after a failure before giving up on it.
JOIN_TIMEOUT_S = 10.0


class ChannelClosed(Exception):
    """The other end of the channel stopped before the hand-off could happen."""


class EndOfStream(Exception):
    """The producer finished normally and every item has been taken."""


class Channel:
    """A bounded first-in first-out hand-off between one producing and one consuming stage."""

    def __init__(self, maxsize: int, name: str = "channel"):
        if maxsize < 1:
            raise ValueError("a channel holds at least one item")
        self.name = name
        self.maxsize = int(maxsize)
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._finished = False   # producer closed normally: drain, then EndOfStream
        self._broken = False     # either end stopped abnormally: no more hand-offs

    def put(self, item: Any) -> None:
        """Hand ``item`` over, waiting while the channel is full; :class:`ChannelClosed`
        when the consumer has gone."""
        with self._cond:
            while len(self._items) >= self.maxsize and not self._broken:
                self._cond.wait(POLL_S)
            if self._broken:
                raise ChannelClosed(f"{self.name}: the consuming stage stopped")
            if self._finished:
                raise RuntimeError(f"{self.name}: put after the producer finished")
            self._items.append(item)
            self._cond.notify_all()

    def get(self) -> Any:
        """The next item, waiting while the channel is empty; :class:`EndOfStream` after
        the last one, :class:`ChannelClosed` when the producer stopped without finishing."""
        with self._cond:
            while not self._items and not self._finished and not self._broken:
                self._cond.wait(POLL_S)
            if self._broken:
                raise ChannelClosed(f"{self.name}: the producing stage stopped")
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            raise EndOfStream

    def __iter__(self) -> Iterator[Any]:
        """Items until the producer finishes (:class:`ChannelClosed` propagates)."""
        while True:
            try:
                yield self.get()
            except EndOfStream:
                return

    def finish(self) -> None:
        """Producer end: no more items; the consumer drains what is left."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def break_(self) -> None:
        """Either end: stop all hand-offs now (items still held are dropped)."""
        with self._cond:
            self._broken = True
            self._items.clear()
            self._cond.notify_all()

    @property
    def broken(self) -> bool:
        return self._broken


class StageGroup:
    """The threads and channels of one streaming run.

    ``channel()`` makes channels the group can break; ``start()`` runs a stage in a
    daemon thread; ``run()`` runs one in the calling thread (usually the main thread,
    so signals interrupt it). The first exception of any stage breaks every channel
    and is re-raised by :meth:`join` (which every caller must reach, e.g. in
    ``finally``). A stage that ends normally should :meth:`Channel.finish` its
    output channel itself.
    """

    def __init__(self, name: str = "ceuspipe"):
        self.name = name
        self._channels: list[Channel] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    def channel(self, maxsize: int, name: str) -> Channel:
        ch = Channel(maxsize, name)
        self._channels.append(ch)
        return ch

    def fail(self, exc: BaseException) -> None:
        """Record ``exc`` (the first one wins) and break every channel."""
        with self._lock:
            if self.error is None:
                self.error = exc
        for ch in self._channels:
            ch.break_()

    @property
    def failed(self) -> bool:
        return self.error is not None

    def _guarded(self, fn: Callable[[], None], stage: str) -> None:
        try:
            fn()
        except ChannelClosed:
            # A consequence of another stage's failure (recorded there), or of a
            # consumer that legitimately stopped early; never the root cause.
            log.debug("%s: %s stopped because a neighbouring stage did", self.name, stage)
            for ch in self._channels:
                ch.break_()
        except BaseException as exc:  # noqa: BLE001 - handed to join()
            log.debug("%s: %s failed: %r", self.name, stage, exc)
            self.fail(exc)

    def start(self, fn: Callable[[], None], stage: str) -> threading.Thread:
        """Run ``fn`` in a daemon thread named ``<group>-<stage>``."""
        thread = threading.Thread(target=self._guarded, args=(fn, stage), name=f"{self.name}-{stage}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def run(self, fn: Callable[[], None], stage: str) -> None:
        """Run ``fn`` in this thread with the same failure handling as :meth:`start`."""
        self._guarded(fn, stage)

    def join(self) -> None:
        """Wait for every thread, then re-raise the first failure, if any.

        Without a failure threads are waited for as long as they run; after one,
        each gets :data:`JOIN_TIMEOUT_S` to notice its broken channels (a thread
        stuck inside a C library call is left behind as a daemon and logged).
        """
        try:
            for thread in self._threads:
                while thread.is_alive() and not self.failed:
                    thread.join(POLL_S)
        except BaseException as exc:  # interrupted while waiting: stop everything
            self.fail(exc)
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT_S if self.failed else None)
            if thread.is_alive():
                log.warning("%s: thread %s did not stop within %g s", self.name, thread.name,
                            JOIN_TIMEOUT_S)
        if self.error is not None:
            raise self.error

    def stop(self, exc: BaseException) -> None:
        """Stop every stage because of ``exc`` (e.g. an interrupt) and wait for them; re-raises."""
        self.fail(exc)
        self.join()
