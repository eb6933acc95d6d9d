"""Connecting to a Dask cluster, and running ordered work on it with progress.

``connect("local")`` starts a LocalCluster with one single-threaded worker process per core
(``local:N`` for N workers); ``connect("tcp://host:8786")`` joins a running scheduler (one
started by ``dask scheduler``, or by dask's Kubernetes, SLURM or YARN deployers). Workers run
the same numpy code as the single-process path, one partition per task; tasks are pure
functions of their inputs, so a lost worker's tasks are rerun elsewhere with the same result.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from typing import Any, Callable, Iterable, Sequence

from ..errors import ParameterError

__all__ = ["connect", "run_ordered", "Engine", "describe"]


class Engine:
    """A connected Dask client and what the report says about it (``spec``, ``workers``)."""

    def __init__(self, client: Any, spec: str, cluster: Any = None) -> None:
        self.client = client
        self.spec = spec
        self._cluster = cluster

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    @property
    def dashboard(self) -> str | None:
        """The dashboard's address, or None where it is not served (bokeh missing)."""
        import importlib.util

        if importlib.util.find_spec("bokeh") is None:
            return None
        try:
            return str(self.client.dashboard_link)
        except (AttributeError, KeyError):
            return None

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(spec: str, *, memory_limit: str | None = None) -> Engine:
    """A Dask client for ``spec``: ``local``, ``local:N`` (N worker processes on this machine)
    or a scheduler address ``tcp://host:port``. Raises :class:`ParameterError` for anything else,
    and when dask's distributed scheduler is not installed."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ParameterError("--dask needs dask's distributed scheduler: pip install 'fingerprint[scale]'") from None
    if spec == "local" or spec.startswith("local:"):
        n_text = spec.partition(":")[2] or str(os.cpu_count() or 1)
        try:
            n = int(n_text)
        except ValueError:
            raise ParameterError(f"--dask {spec!r}: the worker count must be an integer (e.g. local:2)") from None
        if not 1 <= n <= 1024:
            raise ParameterError(f"--dask {spec!r}: between 1 and 1024 workers")
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                               memory_limit=memory_limit or "auto", silence_logs=40)
        return Engine(Client(cluster), spec, cluster)
    if "://" in spec:
        try:
            client = Client(spec, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ParameterError(f"--dask {spec}: cannot reach the scheduler ({exc})") from None
        return Engine(client, spec)
    raise ParameterError(f"--dask {spec!r}: expected local, local:N or a scheduler address like tcp://host:8786")


def describe(engine: Engine | None, partitions: int) -> dict[str, Any]:
    """The report's ``engine`` field."""
    if engine is None:
        return {"name": "single-process", "partitions": partitions}
    return {"name": "dask", "scheduler": engine.spec, "workers": engine.workers, "partitions": partitions}


def _bar(done: int, total: int, t0: float, what: str) -> str:
    width = 30
    filled = int(width * done / max(total, 1))
    return f"\r{what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {time.perf_counter() - t0:.0f}s"


def run_ordered(engine: Engine | None, fn: Callable[..., Any], items: Sequence[Any], *args: Any,
                what: str = "partitions", progress: Callable[[str], None] | None = None,
                **kwargs: Any) -> Iterable[tuple[int, Any]]:
    """``fn(item, *args, **kwargs)`` for every item, on the cluster (or in this process when
    ``engine`` is None); yields ``(index, result)`` as results arrive. Progress: a bar on a
    terminal's stderr, else a line per tenth of the work through ``progress``."""
    total = len(items)
    t0 = time.perf_counter()
    tty = progress is not None and sys.stderr.isatty()

    def report(done: int) -> None:
        if progress is None:
            return
        if tty:
            sys.stderr.write(_bar(done, total, t0, what) + ("\n" if done == total else ""))
            sys.stderr.flush()
        elif done == total or done % max(1, total // 10) == 0:
            progress(f"{what}: {done}/{total} ({time.perf_counter() - t0:.0f}s)")

    if engine is None:
        for i, item in enumerate(items):
            yield i, fn(item, *args, **kwargs)
            report(i + 1)
        return
    from distributed import as_completed

    client = engine.client
    shared = [client.scatter(a, broadcast=True) if _big(a) else a for a in args]
    futures = client.map(fn, list(items), *[[a] * total for a in shared], pure=False, **kwargs)
    index = {f.key: i for i, f in enumerate(futures)}
    done = 0
    for fut in as_completed(futures):
        result = fut.result()
        done += 1
        report(done)
        yield index[fut.key], result
        fut.release()


def _big(obj: Any) -> bool:
    """Arguments worth sending once to every worker rather than with every task (over 64 KiB
    pickled)."""
    if obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return False
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)) > 1 << 16


def task_runner(engine: Engine) -> Callable[[Callable[..., Any], list[tuple]], list[Any]]:
    """A :data:`fingerprint.verify.pipeline.TaskRunner` on the cluster's workers: one task per
    argument tuple, results in order. An argument shared by several tasks (the same object) is
    sent to the cluster once."""
    def run(fn: Callable[..., Any], tasks: list[tuple]) -> list[Any]:
        client = engine.client
        sent: dict[int, Any] = {}
        counts: dict[int, int] = {}
        for args in tasks:
            for a in args:
                counts[id(a)] = counts.get(id(a), 0) + 1
        futures = []
        for args in tasks:
            call = []
            for a in args:
                if counts[id(a)] > 1 and _big(a):
                    if id(a) not in sent:
                        sent[id(a)] = client.scatter(a, hash=False)
                    call.append(sent[id(a)])
                else:
                    call.append(a)
            futures.append(client.submit(fn, *call, pure=False))
        try:
            return client.gather(futures)
        finally:
            client.cancel([*sent.values(), *futures])
    return run
