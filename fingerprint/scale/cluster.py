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

__all__ = ["connect", "run_ordered", "run_shuffle", "Engine", "describe"]


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
    def private(self) -> bool:
        """Whether a key's secret may go to the workers: a cluster on this machine (``local``)
        or one reached over TLS (``tls://``)."""
        return self.spec == "local" or self.spec.startswith(("local:", "tls://"))

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


#: glibc malloc settings of local workers (see :func:`connect`).
_WORKER_MALLOC = {"MALLOC_ARENA_MAX": 1, "MALLOC_MMAP_THRESHOLD_": 1 << 28, "MALLOC_TRIM_THRESHOLD_": 1 << 28}


def connect(spec: str, *, memory_limit: str | None = None) -> Engine:
    """A Dask client for ``spec``: ``local``, ``local:N`` (N worker processes on this machine)
    or a scheduler address ``tcp://host:port``. ``memory_limit`` (local workers only, e.g.
    ``"2GiB"``): each worker's limit; Dask spills held results to disk above 60% of it, which
    bounds a worker's memory whatever the corpus size. Raises :class:`ParameterError` for
    anything else, and when dask's distributed scheduler is not installed."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ParameterError("--dask needs dask's distributed scheduler: pip install 'fingerprint[scale]'") from None
    if memory_limit is not None:
        from dask.utils import parse_bytes

        if not (spec == "local" or spec.startswith("local:")):
            raise ParameterError(f"--worker-memory applies to --dask local[:N]; the workers of {spec} have the "
                                 f"limits they were started with (dask worker --memory-limit)")
        try:
            limit = parse_bytes(memory_limit)
        except (ValueError, TypeError):
            raise ParameterError(f"--worker-memory {memory_limit!r}: not a size (e.g. 2GiB, 1500MB)") from None
        if limit < 256 << 20:
            raise ParameterError(f"--worker-memory {memory_limit!r}: at least 256MiB per worker")
    if spec == "local" or spec.startswith("local:"):
        n_text = spec.partition(":")[2] or str(os.cpu_count() or 1)
        try:
            n = int(n_text)
        except ValueError:
            raise ParameterError(f"--dask {spec!r}: the worker count must be an integer (e.g. local:2)") from None
        if not 1 <= n <= 1024:
            raise ParameterError(f"--dask {spec!r}: between 1 and 1024 workers")
        import dask

        # dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which turns glibc's dynamic mmap
        # threshold off: every array over 128 KiB is then a fresh mmap in the worker's task thread,
        # and zeroing its pages took 15% of the workers' time (perf). Workers here keep arrays under
        # 256 MiB in one heap instead (memory up to that much is kept for reuse, not returned):
        # measured on 100M tokens, 10% less worker CPU, the same peak memory. A user's own settings win.
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", None) or {})
        if str(environ.get("MALLOC_TRIM_THRESHOLD_")) == "65536":
            environ.update(_WORKER_MALLOC)
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   memory_limit=memory_limit or "auto", silence_logs=40)
        client = Client(cluster)
        client.run(_warm)
        return Engine(client, spec, cluster)
    if "://" in spec:
        try:
            client = Client(spec, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ParameterError(f"--dask {spec}: cannot reach the scheduler ({exc})") from None
        return Engine(client, spec)
    raise ParameterError(f"--dask {spec!r}: expected local, local:N or a scheduler address like tcp://host:8786")


def _warm() -> None:
    """Import the task modules on a local worker once, at start-up, as this process has."""
    import importlib

    for name in ("fingerprint.scale.engine", "fingerprint.scale.index", "fingerprint.verify.pipeline",
                 "fingerprint.keys"):
        importlib.import_module(name)


def describe(engine: Engine | None, partitions: int) -> dict[str, Any]:
    """The report's ``engine`` field."""
    if engine is None:
        return {"name": "single-process", "partitions": partitions}
    return {"name": "dask", "scheduler": engine.spec, "workers": engine.workers, "partitions": partitions}


def _bar(done: int, total: int, t0: float, what: str) -> str:
    width = 30
    filled = int(width * done / max(total, 1))
    return f"\r{what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {time.perf_counter() - t0:.0f}s"


def _reporter(progress: Callable[[str], None] | None) -> Callable[[int, int, str], None]:
    """``report(done, of, label)``: a bar on a terminal's stderr, else a line per tenth of the
    work through ``progress``; nothing without ``progress``. The clock starts now."""
    t0 = time.perf_counter()
    tty = progress is not None and sys.stderr.isatty()

    def report(done: int, of: int, label: str) -> None:
        if progress is None:
            return
        if tty:
            sys.stderr.write(_bar(done, of, t0, label) + ("\n" if done == of else ""))
            sys.stderr.flush()
        elif done == of or done % max(1, of // 10) == 0:
            progress(f"{label}: {done}/{of} ({time.perf_counter() - t0:.0f}s)")

    return report


def run_ordered(engine: Engine | None, fn: Callable[..., Any], items: Sequence[Any], *args: Any,
                what: str = "partitions", progress: Callable[[str], None] | None = None,
                **kwargs: Any) -> Iterable[tuple[int, Any]]:
    """``fn(item, *args, **kwargs)`` for every item, on the cluster (or in this process when
    ``engine`` is None); yields ``(index, result)`` as results arrive. Progress: a bar on a
    terminal's stderr, else a line per tenth of the work through ``progress``."""
    total = len(items)
    tell = _reporter(progress)

    def report(done: int) -> None:
        tell(done, total, what)

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


def _meta(result: tuple[Any, Sequence[Any], Any]) -> Any:
    return result[0]


def _piece(result: tuple[Any, Sequence[Any], Any], bucket: int) -> Any:
    return result[1][bucket]


def run_shuffle(engine: Engine | None, map_fn: Callable[..., tuple[Any, Sequence[Any], Any]], items: Sequence[Any],
                args: Sequence[Any], reduce_fn: Callable[[list[Any]], Any], n_buckets: int,
                finish_fn: Callable[..., Any], finish_args: Callable[..., list[tuple]], *,
                consume: Callable[[int, Any], None] | None = None, what: str = "partitions",
                progress: Callable[[str], None] | None = None,
                summarize_fn: Callable[[Any], Any] | None = None, finish_what: str = "merging"
                ) -> tuple[list[Any], list[Any]]:
    """A hash-partitioned map, reduce and finish. ``map_fn(item, *args)`` returns ``(meta, pieces,
    held)``, one piece per bucket (``n_buckets``); ``reduce_fn(pieces)`` runs for each bucket
    ``b`` on piece ``b`` of every item, in item order; once every meta is in,
    ``finish_fn((meta, pieces, held), reduced, j, *finish_args(metas)[j])`` runs for each item
    ``j`` with the list of every bucket's reduce result. Returns the metas and the finish
    results, both in item order (``consume``: each finish result goes to ``consume(j, result)``
    as it arrives, in any order, and is not returned).

    On a cluster, only the metas travel to this process while the map runs; each map result
    stays on the worker that made it, the reduce tasks fetch its pieces, and the finish task of
    an item runs where its map result is (the reduce results should be small). Tasks are pure,
    so a lost worker's are rerun. Progress: the map as :func:`run_ordered` reports it, then the
    finish (``merging``).

    ``summarize_fn``: when given, it runs on each bucket's reduce result (where that result is)
    and ``finish_args(metas, summaries)`` gets the summaries in bucket order too (they travel
    to this process: keep them small)."""
    if engine is None:
        mapped = [r for _i, r in run_ordered(None, map_fn, items, *args, what=what, progress=progress)]
        here = [m[0] for m in mapped]
        reduced = [reduce_fn([m[1][b] for m in mapped]) for b in range(n_buckets)]
        extra_here = (finish_args(here) if summarize_fn is None
                      else finish_args(here, [summarize_fn(r) for r in reduced]))
        finished = []
        for j in range(len(mapped)):
            result = finish_fn(mapped[j], reduced, j, *extra_here[j])
            if consume is not None:
                consume(j, result)
                result = None
            finished.append(result)
            mapped[j] = (here[j], [], None)  # free each item's data once finished
        return here, finished
    from distributed import as_completed

    client = engine.client
    total = len(items)
    report = _reporter(progress)

    shared = [client.scatter(a, broadcast=True) if _big(a) else a for a in args]
    futures = client.map(map_fn, list(items), *[[a] * total for a in shared], pure=False)
    meta_futures = client.map(_meta, futures, pure=False)
    pieces = client.map(_piece, [f for f in futures for _b in range(n_buckets)],
                        [b for _f in futures for b in range(n_buckets)], pure=False)
    reducers = [client.submit(reduce_fn, pieces[b::n_buckets], pure=False) for b in range(n_buckets)]
    index = {f.key: i for i, f in enumerate(meta_futures)}
    metas: list[Any] = [None] * total
    finals: list[Any] = []
    freed: set[int] = set()
    try:
        done = 0
        for fut in as_completed(meta_futures):
            metas[index[fut.key]] = fut.result()
            done += 1
            report(done, total, what)
        extra = (finish_args(metas) if summarize_fn is None
                 else finish_args(metas, client.gather(client.map(summarize_fn, reducers, pure=False))))
        report = _reporter(progress)  # the finishing phase has its own clock
        finals = [client.submit(finish_fn, futures[j], reducers, j, *extra[j], pure=False) for j in range(total)]
        position = {f.key: j for j, f in enumerate(finals)}
        out: list[Any] = [None] * total
        done = 0
        for fut, result in as_completed(finals, with_results=True):  # results fetched in the background
            j = position[fut.key]
            if consume is not None:
                consume(j, result)
            else:
                out[j] = result
            del result
            done += 1
            report(done, total, finish_what)
            freed.add(j)  # the item's map result is no longer needed: free it on its worker
            for f in (fut, futures[j], meta_futures[j], *pieces[j * n_buckets:(j + 1) * n_buckets]):
                f.release()
    finally:
        client.cancel([*reducers, *[f for j, f in enumerate(finals) if j not in freed],
                       *[f for j, f in enumerate(futures) if j not in freed],
                       *[f for j, f in enumerate(meta_futures) if j not in freed],
                       *[f for i, f in enumerate(pieces) if i // n_buckets not in freed]])
    return metas, out


def _big(obj: Any) -> bool:
    """Arguments worth sending once to every worker rather than with every task (over 64 KiB
    pickled)."""
    if obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return False
    nbytes = getattr(obj, "nbytes", None)  # numpy arrays: no need to pickle them to know
    if isinstance(nbytes, int):
        return nbytes > 1 << 16
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
                if id(a) in sent:
                    call.append(sent[id(a)])
                elif counts[id(a)] > 1 and _big(a):
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
