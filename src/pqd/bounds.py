"""What a cycle keeps, whatever its size: the bounds shared by the workers, the runner, pqd and
the metrics. Constants only and no imports, so the pool workers can import it for free.

A probe may put up to 1,000,000 items per job over up to 100,000 rounds (pqd.config.load). Kept per
job: the first TRACE_ITEMS item names (the seed's A..Z) and a count of all of them, and the
queue operations' durations as counts per OPERATION_BUCKETS bucket with their sum. Kept per
cycle: the first and the last TRACE_JOBS // 2 job reports, and totals over every job.
"""

TRACE_ITEMS = 26
TRACE_JOBS = 20
#: A job_error keeps the last this many characters of the worker's traceback (the innermost
#: frames and the exception come last).
TRACEBACK_CHARS = 8192
#: What the tree wrote to stderr in a cycle: the first STDERR_HEAD_BYTES and the last
#: STDERR_TAIL_BYTES are kept (the first error is near the start, the last words at the end);
#: lines longer than STDERR_LINE_BYTES are cut before they are classified.
STDERR_HEAD_BYTES = 16384
STDERR_TAIL_BYTES = 4096
STDERR_LINE_BYTES = 1024

#: One put_nowait/get_nowait on a Manager queue proxy is a round trip over a socket: tens of
#: microseconds when healthy, milliseconds when the Manager is starved. Upper bounds of the
#: ``pqd_queue_operation_duration_seconds`` buckets; a last, unbounded (+Inf) bucket follows.
OPERATION_BUCKETS = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
    0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip


def bucket_index(seconds: float) -> int:
    """The bucket of one duration: the first bound >= it (Prometheus' inclusive "le")."""
    low, high = 0, len(OPERATION_BUCKETS)
    while low < high:  # bisect_left, without importing bisect into every worker
        mid = (low + high) // 2
        if OPERATION_BUCKETS[mid] < seconds:
            low = mid + 1
        else:
            high = mid
    return low
