import sys
import tracemalloc
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).parent))


def traced_peak_mib(fn: Callable[..., Any], *args: Any) -> float:
    """Peak traced memory (MiB) of one extra call of ``fn``: Python and numpy allocations,
    measured outside the timed rounds (tracing slows the call)."""
    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Run a command; return (wall seconds, its peak RSS in MiB). A small wrapper process reads
    the peak of its one child, so earlier commands of the session do not leak into it."""
    import subprocess
    import time

    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
               "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, int(res.stdout.strip().splitlines()[-1]) / 1024
