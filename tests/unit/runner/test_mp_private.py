"""pqd.runner.mp_private against real multiprocessing objects (a forkserver Pool of one worker, a
SyncManager, the forkserver and resource tracker they start).

The adapter reads most private attributes with getattr defaults, so a CPython that renamed one
would not fail there: the cycle would quietly stop seeing dead workers or stop unlocking a
pool. Here it fails, naming the attribute.
"""

from __future__ import annotations

import ast
import importlib
import multiprocessing
import multiprocessing.context
import multiprocessing.managers
import multiprocessing.pool
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pqd.runner import mp_private
from pqd.runner.cycle import FORKSERVER_PRELOAD
from pqd.runner.procs import ProcessRef
from tests.helpers.code_tree import modules

ADAPTER = "runner.mp_private"


def private(obj: object, owner: str, path: str) -> Any:
    """``obj.<path>``, or a failure that names the attribute this CPython does not have."""
    for name in path.split("."):
        if not hasattr(obj, name):
            pytest.fail(
                f"Python {sys.version.split()[0]} has no {owner}.{path} ({type(obj).__name__} "
                f"lacks {name!r}); pqd.runner.mp_private relies on it",
                pytrace=False,
            )
        obj = getattr(obj, name)
    return obj


@pytest.fixture(scope="module")
def ctx() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, multiprocessing.context.ForkServerContext)
    # As a cycle starts it: later cycles in this process may reuse this forkserver.
    context.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    return context


@pytest.fixture
def pool(ctx: multiprocessing.context.ForkServerContext) -> Iterator[multiprocessing.pool.Pool]:
    pool = ctx.Pool(1)
    yield pool
    pool.terminate()
    pool.join()


@pytest.fixture
def manager(
    ctx: multiprocessing.context.ForkServerContext,
) -> Iterator[multiprocessing.managers.SyncManager]:
    manager = multiprocessing.managers.SyncManager(ctx=ctx)
    manager.start()
    yield manager
    manager.shutdown()


def test_every_private_attribute_is_there(
    pool: multiprocessing.pool.Pool, manager: multiprocessing.managers.SyncManager
) -> None:
    owners = {"Pool": pool, "BaseManager": manager}
    resolved = []
    for owner, paths in mp_private.PRIVATE_ATTRIBUTES.items():
        obj = owners[owner] if owner in owners else importlib.import_module(owner)
        for path in paths:
            private(obj, owner, path)  # fails, naming the attribute, if it is not there
            resolved.append(f"{owner}.{path}")
    assert len(resolved) == sum(len(paths) for paths in mp_private.PRIVATE_ATTRIBUTES.values())


def test_helper_pids_are_the_running_forkserver_and_resource_tracker(
    pool: multiprocessing.pool.Pool,
) -> None:
    forkserver = private(
        importlib.import_module("multiprocessing.forkserver"),
        "multiprocessing.forkserver",
        "_forkserver._forkserver_pid",
    )
    tracker = private(
        importlib.import_module("multiprocessing.resource_tracker"),
        "multiprocessing.resource_tracker",
        "_resource_tracker._pid",
    )
    assert mp_private.helper_pids() == {forkserver: "forkserver", tracker: "resource_tracker"}
    for pid in (forkserver, tracker):
        ref = ProcessRef.of(pid)
        assert ref is not None and ref.ppid() == os.getpid(), pid


def test_pool_workers_are_the_processes_that_run_its_jobs(pool: multiprocessing.pool.Pool) -> None:
    assert mp_private.pool_workers(pool) == private(pool, "Pool", "_pool")
    (worker,) = mp_private.pool_workers(pool)
    assert worker.exitcode is None
    assert pool.apply(os.getpid) == worker.pid
    assert mp_private.pool_workers(None) == []


def test_manager_process_is_the_process_that_serves_it(
    ctx: multiprocessing.context.ForkServerContext,
) -> None:
    manager = multiprocessing.managers.SyncManager(ctx=ctx)
    manager.start()
    process = mp_private.manager_process(manager)
    assert process is private(manager, "BaseManager", "_process")
    assert process.exitcode is None and process in multiprocessing.active_children()
    manager.shutdown()
    assert process.exitcode is not None


def test_stop_replacing_workers_leaves_a_killed_worker_dead(
    ctx: multiprocessing.context.ForkServerContext, pool: multiprocessing.pool.Pool
) -> None:
    assert private(pool, "Pool", "_worker_handler._state") == multiprocessing.pool.RUN
    (worker,) = mp_private.pool_workers(pool)
    mp_private.stop_replacing_workers(pool)
    assert private(pool, "Pool", "_worker_handler._state") == multiprocessing.pool.TERMINATE
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(5)
    # The maintenance thread leaves its loop once it sees TERMINATE; after it has gone nothing
    # can start a replacement, so the check below cannot pass by looking too early.
    handler = private(pool, "Pool", "_worker_handler")
    handler.join(10)
    assert not handler.is_alive()
    assert mp_private.pool_workers(pool) == [worker], "a replacement was started"
    # An idle worker waits in the task queue's get() holding its read lock; killed there, it
    # leaves the lock held and terminate() would wait for it forever (gh-66587). pqd's
    # teardown swaps the locks first; so does this test before the fixture terminates.
    mp_private.replace_queue_locks(pool, ctx.Lock)


def test_replace_queue_locks_puts_new_locks_in_place(
    ctx: multiprocessing.context.ForkServerContext, pool: multiprocessing.pool.Pool
) -> None:
    old = (private(pool, "Pool", "_inqueue._rlock"), private(pool, "Pool", "_outqueue._wlock"))
    made: list[Any] = []

    def new_lock() -> Any:
        made.append(ctx.Lock())
        return made[-1]

    mp_private.replace_queue_locks(pool, new_lock)
    new = (private(pool, "Pool", "_inqueue._rlock"), private(pool, "Pool", "_outqueue._wlock"))
    assert list(new) == made and len(made) == 2
    assert not set(map(id, new)) & set(map(id, old))


def test_a_pool_whose_worker_died_in_a_job_terminates_after_the_teardown_calls(
    ctx: multiprocessing.context.ForkServerContext,
) -> None:
    """What the cycle's forced teardown does (pqd.runner.teardown), on a real pool: the result
    of the killed worker's job is forgotten, and terminate() returns."""
    pool = ctx.Pool(1)
    (worker,) = mp_private.pool_workers(pool)
    pool.apply_async(time.sleep, (60,))
    assert len(private(pool, "Pool", "_cache")) == 1
    mp_private.stop_replacing_workers(pool)
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(5)
    mp_private.replace_queue_locks(pool, ctx.Lock)
    mp_private.forget_pending_results(pool)
    assert len(private(pool, "Pool", "_cache")) == 0
    ended = threading.Thread(target=pool.terminate, daemon=True)
    ended.start()
    ended.join(10)
    assert not ended.is_alive(), "Pool.terminate() blocked"


def test_only_the_adapter_names_a_private_attribute() -> None:
    """The callers reach multiprocessing's private attributes through pqd.runner.mp_private only,
    and the adapter lists each one it uses in PRIVATE_ATTRIBUTES (which the tests above resolve)."""
    listed = {
        name
        for paths in mp_private.PRIVATE_ATTRIBUTES.values()
        for p in paths
        for name in p.split(".")
    }
    tree = {module.name: module.path for module in modules()}
    used = _private_names(tree.pop(ADAPTER))
    assert used <= listed, f"mp_private uses private names it does not list: {used - listed}"
    for name, path in tree.items():
        leaked = _private_names(path) & listed
        assert not leaked, f"{name} reaches {sorted(leaked)} itself, not through mp_private"


def _private_names(path: Path) -> set[str]:
    """Private attributes a module reads or writes on something other than self, and the
    private names it passes to getattr."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "os"))
        ):
            names.add(node.attr)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and str(node.args[1].value).startswith("_")
        ):
            names.add(str(node.args[1].value))
    return names
