"""``bench pipeline``: the bare embedding in the pipeline's own calls, and where the CPU went."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.pipeline import as_pipeline_batches, cpu_seconds, in_batches
from ingest_worker.handler import batch_sizes


def test_the_pipeline_calls_are_each_documents_chunk_batches() -> None:
    first = [f"a{i}" for i in range(70)]
    second = [f"b{i}" for i in range(3)]

    calls = as_pipeline_batches([first, second], 32)

    assert [len(c) for c in calls] == [*batch_sizes(70, 32), *batch_sizes(3, 32)]
    assert [len(c) for c in calls] == [4, 8, 16, 32, 10, 3]
    assert [t for c in calls for t in c] == first + second  # in order, none twice
    assert not any(set(c) & set(first) and set(c) & set(second) for c in calls)
    assert [len(c) for c in in_batches(first + second, 32)] == [32, 32, 9]


def test_cpu_seconds_counts_descendants_under_their_named_ancestor_only() -> None:
    spin = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    # A child that busies a grandchild for 0.3 s of CPU, then waits.
    code = (f"import subprocess, sys, time\np = subprocess.Popen([sys.executable, '-c', {spin!r}])"
            "\np.wait()\ntime.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while cpu_seconds({"child": child.pid})["child"] < 0.25:
            assert time.monotonic() < deadline, "the grandchild's CPU was never counted"
            time.sleep(0.05)
        # Named itself, the child is no part of this process's figure.
        both = cpu_seconds({"child": child.pid, "me": os.getpid()})
        mine = cpu_seconds({"me": os.getpid()})["me"]
        assert both["me"] < mine - 0.2
    finally:
        child.kill()
        child.wait()
