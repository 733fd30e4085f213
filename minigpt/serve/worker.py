"""The one thread that touches the model: a FIFO of jobs, run one at a time, results handed back to asyncio.

`Engine` is not thread-safe (one model, and `torch.set_num_threads` juggling per step), so the server never calls
it from request handlers. Each request becomes a `Job` on a bounded queue (`queue_size`, default 64; a full
queue is a 503); the worker thread takes jobs in arrival order and runs them to the end, so generations never
interleave on the model. Every `TokenEvent` crosses back to the request's event loop through
`loop.call_soon_threadsafe` into the job's `asyncio.Queue`; `Job.events()` is the async iterator a handler reads.

Cancelling: `job.cancel()` (the server calls it when the client disconnects) sets a flag that the decoder checks
after every token; it then closes the engine stream (its generator exits at once) and the job ends with reason
"cancelled". A job cancelled while still queued is skipped without touching the model. When the server is told
to exit (`begin_stop`), every job is cancelled that way and its request ends with `ShuttingDown` (a 503). Every
finished job leaves a `JobRecord` (tokens generated, how it ended) in `worker.records`; `wait_for(predicate)` lets
tests wait on them.

Batching plugs in here: the worker hands the decoder up to `decoder.max_batch` waiting generation jobs at once,
and a decoder may call `admit(k)` between steps to take newly queued ones (continuous batching). `OneAtATime`,
the decoder used today, takes one job and streams it; a batched engine would add a decoder with
`max_batch = 8` that steps several prompts in one forward, without changing the server. `worker.call(fn)` runs
any other model work (the page's per-token inspection) on the same thread, in the same queue.
"""
from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Protocol

from ..infer.engine import Engine, TokenEvent
from ..infer.sampling import SamplingConfig

_DONE = object()  # ends a job's event queue


class QueueFull(Exception):
    """More jobs are waiting than the queue holds."""


class ShuttingDown(Exception):
    """The server was told to exit before the job ended (or before it was queued)."""


@dataclass
class JobRecord:
    """How one finished job went: what tests and the benchmark read."""

    id: int
    prompt_tokens: int
    tokens: int  # sampled tokens, all samples together
    reason: str  # "done", "cancelled", "error" or "skipped" (cancelled before it started)


class Job:
    """One unit of model work with an async channel back to the request that submitted it.

    Generation jobs carry a prompt and a SamplingConfig and deliver TokenEvents; call jobs carry `fn` and
    deliver its result. `events()` yields the items in order and raises the worker's exception, if any."""

    _ids = itertools.count(1)

    def __init__(self, loop: asyncio.AbstractEventLoop, *, prompt_ids: list[int] | None = None,
                 config: SamplingConfig | None = None, n: int = 1, stop_ids: set[int] | None = None,
                 fn: Callable[[], Any] | None = None):
        self.id = next(self._ids)
        self.prompt_ids, self.config, self.n, self.stop_ids, self.fn = prompt_ids or [], config, n, stop_ids, fn
        self.seed: int | None = None  # the run's seed, set when the engine stream starts
        self.tokens = 0
        self._loop = loop
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self._cancelled = threading.Event()
        self.on_cancel: Callable[[], None] | None = None  # the worker's: wakes whoever waits on it

    # ----------------------------------------------------------------------------- the request's side

    def cancel(self) -> None:
        if not self._cancelled.is_set():
            self._cancelled.set()
            if self.on_cancel is not None:
                self.on_cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    async def events(self) -> AsyncIterator[Any]:
        while True:
            item = await self._items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def result(self) -> Any:
        """A call job's return value."""
        return [item async for item in self.events()][0]

    # ----------------------------------------------------------------------------- the worker's side

    def emit(self, item: Any) -> None:
        if isinstance(item, TokenEvent):
            self.tokens += 1
        self._loop.call_soon_threadsafe(self._items.put_nowait, item)

    def close(self, error: BaseException | None = None) -> None:
        if error is not None:
            self.emit(error)
        self._loop.call_soon_threadsafe(self._items.put_nowait, _DONE)


class Decoder(Protocol):
    """Runs generation jobs on the worker thread: emits each job's events, honours `job.cancelled`, and
    returns the final reason of each job ("done" or "cancelled"). `admit(k)` takes up to k more waiting jobs."""

    max_batch: int

    def run(self, jobs: list[Job], admit: Callable[[int], list[Job]]) -> dict[int, str]: ...


class OneAtATime:
    """The decoder used today: each job's engine stream, start to end, one job after another."""

    max_batch = 1

    def __init__(self, engine: Engine):
        self.engine = engine

    def run(self, jobs: list[Job], admit: Callable[[int], list[Job]]) -> dict[int, str]:
        return {job.id: self._run(job) for job in jobs}

    def _run(self, job: Job) -> str:
        stream = self.engine.stream(job.prompt_ids, job.config, n=job.n, stop_ids=job.stop_ids)
        job.seed = stream.seed
        for ev in stream:
            job.emit(ev)
            if job.cancelled:
                stream.close()  # the engine's generator exits now: no more forwards for this job
                return "cancelled"
        return "done"


class Worker:
    """The model's thread. `submit(job)` from the event loop; `start()` / `stop()` from the server's lifespan."""

    def __init__(self, engine: Engine, decoder: Decoder | None = None, queue_size: int = 64, keep_records: int = 1000):
        self.engine = engine
        self.decoder = decoder or OneAtATime(engine)
        self.queue_size = queue_size
        self._pending: deque[Job] = deque()
        self._running: list[Job] = []  # the jobs the decoder is running now
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()  # guards _pending, _stopping and records
        self.records: deque[JobRecord] = deque(maxlen=keep_records)

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="minigpt-serve-worker", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Cancel what is waiting or running, and end the thread."""
        if self._thread is None:
            return
        self.begin_stop()
        self._thread.join()
        self._thread = None

    def begin_stop(self) -> None:
        """Cancel what is waiting or running, whose requests then end with ShuttingDown, and refuse new jobs;
        the thread ends after the current token. The server calls it as soon as it is told to exit, so that no
        request holds the shutdown up (they would otherwise run on until the server's graceful timeout)."""
        with self._changed:
            self._stopping = True
            for job in [*self._pending, *self._running]:
                job.cancel()
            self._changed.notify_all()

    @property
    def waiting(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> list[int]:
        """The ids of the jobs being generated now."""
        return [job.id for job in self._running]

    @property
    def queued(self) -> list[Job]:
        """The jobs waiting their turn, first first."""
        with self._changed:
            return list(self._pending)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def submit(self, job: Job) -> Job:
        job.on_cancel = self._notify
        with self._changed:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self._pending) >= self.queue_size:
                waiting = len(self._pending)
                raise QueueFull(f"{waiting} request{'s are' if waiting != 1 else ' is'} already waiting")
            self._pending.append(job)
            self._changed.notify_all()
        return job

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn()` on the worker thread (after the jobs queued before it) and return its result."""
        return await self.submit(Job(asyncio.get_running_loop(), fn=fn)).result()

    def wait_for(self, predicate: Callable[[list[JobRecord]], bool], timeout: float) -> bool:
        """Block until `predicate(records)` holds (re-checked when a job starts, ends or is cancelled), or the
        timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(list(self.records)), timeout)

    # ----------------------------------------------------------------------------- the thread

    def _loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._stopping)
                if not self._pending:
                    return
                job = self._pending.popleft()
            if job.fn is not None:
                self._call(job)
            else:
                self._generate([job] + self.admit(self.decoder.max_batch - 1))

    def admit(self, limit: int) -> list[Job]:
        """Up to `limit` generation jobs from the front of the queue, without waiting (a call job stops the
        taking: it runs in its turn)."""
        taken: list[Job] = []
        with self._changed:
            while len(taken) < limit and self._pending and self._pending[0].fn is None:
                taken.append(self._pending.popleft())
        return taken

    def _live(self, jobs: list[Job]) -> list[Job]:
        """The jobs not cancelled while they waited; the others end here as "skipped"."""
        live = []
        for job in jobs:
            if job.cancelled:
                self._finish(job, "skipped")
            else:
                live.append(job)
        return live

    def _call(self, job: Job) -> None:
        if not self._live([job]):
            return
        try:
            value = job.fn()
        except Exception as e:  # noqa: BLE001 - handed to the request, which answers with an error
            self._finish(job, "error", e)
        else:
            job.emit(value)
            self._finish(job, "done")

    def _generate(self, jobs: list[Job]) -> None:
        running = self._live(jobs)

        def admit(limit: int) -> list[Job]:  # what the decoder takes mid-run joins `running`
            more = self._live(self.admit(limit))
            running.extend(more)
            return more

        with self._changed:
            self._running = running
            self._changed.notify_all()
        try:
            reasons = self.decoder.run(list(running), admit) if running else {}
        except Exception as e:  # noqa: BLE001 - the requests get an error; the worker goes on
            reasons = {j.id: "error" for j in running}
            error: BaseException | None = e
        else:
            error = None
        finally:
            self._running = []
        for j in running:
            reason = reasons.get(j.id, "done")
            self._finish(j, reason, error if reason == "error" else None)

    def _finish(self, job: Job, reason: str, error: BaseException | None = None) -> None:
        """Record how the job ended, then close its channel (so a request that got its answer has its record)."""
        if self._stopping and reason in ("cancelled", "skipped") and error is None:
            error = ShuttingDown("the server is shutting down")
        with self._changed:
            self.records.append(JobRecord(job.id, len(job.prompt_ids), job.tokens, reason))
            self._changed.notify_all()
        job.close(error)
