"""pqd.runner.mp_private checked under another CPython (tests/integration/supervisor/
test_mp_private_versions.py runs it with pqd's runner-side copy first on the path): every
private attribute it lists resolves on real objects, and what it does with them works. Prints
one JSON object; standard library only, valid Python 3.9."""

from __future__ import annotations

import importlib
import json
import multiprocessing
import multiprocessing.managers
import os
import signal
import sys
import threading
import time
from typing import Any


def _missing(owners: dict[str, Any]) -> list[str]:
    from pqd.runner import mp_private

    missing = []
    for owner, paths in mp_private.PRIVATE_ATTRIBUTES.items():
        for path in paths:
            obj = owners[owner] if owner in owners else importlib.import_module(owner)
            for name in path.split("."):
                if not hasattr(obj, name):
                    missing.append(f"{owner}.{path}")
                    break
                obj = getattr(obj, name)
    return missing


def _teardown_after_a_worker_died(ctx: Any) -> bool:
    """What the cycle's forced teardown does: terminate() returns after a job's worker died."""
    from pqd.runner import mp_private

    pool = ctx.Pool(1)
    (worker,) = mp_private.pool_workers(pool)
    pool.apply_async(time.sleep, (60,))
    mp_private.stop_replacing_workers(pool)
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(5)
    mp_private.replace_queue_locks(pool, ctx.Lock)
    mp_private.forget_pending_results(pool)
    ended = threading.Thread(target=pool.terminate, daemon=True)
    ended.start()
    ended.join(10)
    replaced = mp_private.pool_workers(pool) != [worker]
    return not ended.is_alive() and not replaced


def main() -> int:
    from pqd.runner import mp_private
    from pqd.runner.cycle import FORKSERVER_PRELOAD

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    pool = ctx.Pool(1)
    manager = multiprocessing.managers.SyncManager(ctx=ctx)
    manager.start()
    report = {
        "version": sys.version.split()[0],
        "pqd": mp_private.__file__,
        "missing": _missing({"Pool": pool, "BaseManager": manager}),
        "helper_roles": sorted(mp_private.helper_pids().values()),
        "helpers_are_children": all(_ppid(pid) == os.getpid() for pid in mp_private.helper_pids()),
        "worker_runs_jobs": pool.apply(os.getpid) == mp_private.pool_workers(pool)[0].pid,
        "manager_process_alive": mp_private.manager_process(manager).exitcode is None,
    }
    pool.terminate()
    pool.join()
    manager.shutdown()
    report["teardown_after_a_dead_worker"] = _teardown_after_a_worker_died(ctx)
    print(json.dumps(report))
    return 0


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


if __name__ == "__main__":
    sys.exit(main())
