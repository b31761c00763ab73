"""Calls into multiprocessing that may block for good, made to return by a deadline.

``Pool.terminate()`` can block forever when a worker died holding one of the pool's locks, and
Manager proxy calls block forever when the Manager is stopped (docs/design.md §5). The cycle
makes every such call through a BlockingCaller.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

#: How often a wait re-checks its deadline (and the cycle, that workers and Manager are alive).
POLL_SECONDS = 0.05

CANCELLED = "cancelled: pqd is stopping"


class Cancelled(Exception):
    """The daemon is stopping; the cycle is cut short (and not exported)."""


class BlockingCaller:
    """Runs calls that may block forever on one daemon thread and waits for them with a deadline.

    A daemon thread, not a ThreadPoolExecutor: the interpreter joins executor threads at exit,
    and a call stuck on a stopped Manager would then keep pqd from exiting. Once a call has
    missed its deadline the thread is considered lost: it unblocks when the cycle's processes are
    killed, and later calls are refused rather than queued behind it.
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], _Pending] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.stuck = False

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            func, pending = call
            try:
                pending.value = func()
            except BaseException as exc:  # handed back to the waiting thread
                pending.error = exc
            pending.done.set()

    def call(
        self,
        func: Callable[[], T],
        timeout: float,
        what: str,
        cancel: threading.Event | None = None,
    ) -> T:
        if self.stuck:
            raise TimeoutError(f"{what}: an earlier call is still blocked")
        if self._thread.ident is None:
            # Started on first use, inside the cycle's error handling: under a process limit
            # (pids.max counts threads) even this thread may not start, and that is a finding.
            self._thread.start()
        pending = _Pending()
        self._calls.put((func, pending))
        deadline = time.monotonic() + max(timeout, 0.0)
        while not pending.done.wait(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0))):
            if cancel is not None and cancel.is_set():
                self.stuck = True
                raise Cancelled(f"{what}: {CANCELLED}")
            if time.monotonic() >= deadline:
                self.stuck = True
                raise TimeoutError(f"{what} did not return within {timeout:.1f}s")
        if pending.error is not None:
            raise pending.error
        return pending.value  # type: ignore[no-any-return]

    def close(self, timeout: float) -> bool:
        """Stop the thread; False if it is still blocked after ``timeout``."""
        if self._thread.ident is None:
            return True
        self._calls.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None
