"""Post-processing off the critical path: :func:`~objdisc.engine.post.post_process` in worker processes.

While the main process runs the next batch through the model, ``N`` worker processes (forked
from a clean ``forkserver``, not from the main process and its thread pools) do each finished
image's host work:
MaskCut's image decode and CRF, the bilateral solver, the mask encoding. Each worker holds a few
images in its inbox, so it never waits for the main process; at most ``N x depth`` images are in
flight, so memory stays flat. The entries are :func:`~objdisc.engine.post.post_process`'s, the
same as in the main process (:class:`SerialPost`, ``--post-workers 0``).

A worker that dies (killed, out of memory) costs only the image it was processing: that image's
entry says so (it is then skipped, and redone by a resume); the images queued behind it go to
the other workers, and a new worker takes its place. Workers that keep dying before they start
an image (a script using objdisc without an ``if __name__ == "__main__":`` guard: each worker
imports it) make the pool hand the work back to the main process, with a warning saying why.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from objdisc.engine.discover import ImageResult
from objdisc.engine.post import PostSpec, journal_entry, post_process

logger = logging.getLogger(__name__)

DEPTH = 3  # images queued per worker: it finds its next image waiting when it finishes one
MAX_DEFAULT = 32  # workers at most by default (each holds a Python, torch and its images)

Done = tuple[ImageResult, dict[str, Any]]  # the result handed in and its journal entry


def default_post_workers(decode_workers: int) -> int:
    """``--post-workers`` by default: the cores the main process and the decode workers leave
    free, at most :data:`MAX_DEFAULT` (0 on a machine with no core to spare: the work then runs in
    the main process)."""
    return max(0, min(MAX_DEFAULT, (os.cpu_count() or 1) - 1 - decode_workers))


class SerialPost:
    """:func:`~objdisc.engine.post.post_process` in the main process, as each image comes."""

    def __init__(self, spec: PostSpec) -> None:
        self.spec = spec
        self._done: deque[Done] = deque()

    def submit(self, result: ImageResult) -> Iterator[Done]:
        """Process ``result`` now; yields it done."""
        yield result, post_process(self.spec, result)

    def ready(self) -> Iterator[Done]:
        return iter(())

    def drain(self) -> Iterator[Done]:
        return iter(())

    def close(self) -> None:
        pass

    def __enter__(self) -> SerialPost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(uid: int, spec: PostSpec, inbox: Any, outbox: Any) -> None:
    """A worker: one image at a time from its inbox, each announced, then its entry sent back
    (``outbox`` is this worker's end of a pipe: a message is in the pipe before the next image
    starts, so the main process knows which image a worker that died was on)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per worker: N workers, N cores
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    while True:
        job = inbox.get()
        if job is None:
            return
        job_id, result = job
        outbox.send(("start", uid, job_id, None))
        try:
            entry = post_process(spec, result)
        except Exception as exc:  # an option error: the main process raises it
            outbox.send(("fatal", uid, job_id, exc))
            continue
        outbox.send(("done", uid, job_id, entry))


@dataclass
class _Worker:
    uid: int
    process: Any
    inbox: Any
    results: Any  # the main process's end of the worker's result pipe
    jobs: deque[int] = field(default_factory=deque)  # assigned, in order; jobs[0] is the one it works on
    started: int | None = None
    served: int = 0  # images it finished


def _context() -> Any:
    """``forkserver``: workers are forked from a clean server process that has imported objdisc
    (and torch) once, so a pool starts in a fraction of a second, and nothing is forked from a
    process whose thread pools run (the main process's torch and OpenCV)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["objdisc.engine.post"])
    return context


class PostPool:
    """``workers`` processes doing :func:`~objdisc.engine.post.post_process` (module docstring).

    Use :meth:`submit` for each result (it yields the images finished meanwhile, waiting only when
    every worker's inbox is full), :meth:`ready` for the ones finished so far, :meth:`drain` at the
    end; :meth:`close` (or the ``with`` block) stops the workers.
    """

    def __init__(self, spec: PostSpec, workers: int, depth: int = DEPTH) -> None:
        if workers < 1:
            raise ValueError("a PostPool needs at least one worker (use SerialPost for none)")
        self.spec = spec
        self.depth = depth
        self._context = _context()
        self._uids = 0
        self._workers = [self._start() for _ in range(workers)]
        self._jobs: dict[int, ImageResult] = {}
        self._next_id = 0
        self._done: deque[Done] = deque()
        self._idle_deaths = 0  # workers that died with no image started: at start-up, or reading a job
        self.serial = False  # the workers cannot run here: the main process does the work

    def _start(self) -> _Worker:
        uid, self._uids = self._uids, self._uids + 1
        inbox = self._context.Queue()
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_serve, args=(uid, self.spec, inbox, send), daemon=True, name=f"objdisc-post-{uid}"
        )
        process.start()
        send.close()  # the worker holds the sending end
        return _Worker(uid, process, inbox, receive)

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    def submit(self, result: ImageResult) -> Iterator[Done]:
        """Hand ``result`` to the least busy worker; yields the images finished meanwhile."""
        if self.serial:
            yield result, post_process(self.spec, result)
            return
        while True:
            worker = min(self._workers, key=lambda w: len(w.jobs))
            if len(worker.jobs) < self.depth:
                break
            self._collect(block=True)
            yield from self._pop_done()
        job_id, self._next_id = self._next_id, self._next_id + 1
        self._jobs[job_id] = result
        self._assign(worker, job_id)
        yield from self.ready()

    def _assign(self, worker: _Worker, job_id: int) -> None:
        worker.jobs.append(job_id)
        worker.inbox.put((job_id, self._jobs[job_id]))

    def ready(self) -> Iterator[Done]:
        """The images finished so far (never waits)."""
        self._collect(block=False)
        yield from self._pop_done()

    def drain(self) -> Iterator[Done]:
        """Every image still in flight, as each finishes."""
        while self._jobs:
            self._collect(block=True)
            yield from self._pop_done()
        yield from self._pop_done()

    def _pop_done(self) -> Iterator[Done]:
        while self._done:
            yield self._done.popleft()

    def _collect(self, block: bool) -> None:
        """Read the workers' messages (waiting up to a moment for one when ``block``), and replace
        any worker that died (after reading every message it sent)."""
        if self.serial:
            return
        pipes = {w.results: w for w in self._workers}
        sentinels = {w.process.sentinel: w for w in self._workers}
        ready = multiprocessing.connection.wait([*pipes, *sentinels], timeout=0.2 if block else 0.0)
        for handle in ready:
            worker = pipes.get(handle) or sentinels[handle]
            self._read(worker)
        self._replace_dead()

    def _read(self, worker: _Worker) -> None:
        """Every message waiting in ``worker``'s pipe."""
        try:
            while worker.results.poll():
                kind, _, job_id, payload = worker.results.recv()
                if kind == "start":
                    worker.started = job_id
                elif kind == "fatal":
                    self.close()
                    raise payload
                else:  # done
                    if worker.jobs and worker.jobs[0] == job_id:
                        worker.jobs.popleft()
                    worker.started = None
                    worker.served += 1
                    result = self._jobs.pop(job_id, None)
                    if result is not None:
                        self._done.append((result, payload))
        except (EOFError, OSError):  # the worker is gone; its messages are read
            pass

    def _replace_dead(self) -> None:
        for index, worker in enumerate(self._workers):
            if self.serial or worker.process.is_alive():
                continue
            self._read(worker)  # whatever it sent before it died
            worker.results.close()
            code = worker.process.exitcode
            lost = list(worker.jobs)
            culprit = worker.started  # the image it announced and did not finish, if any
            if culprit is None:
                self._idle_deaths += 1
            if self._idle_deaths > 2 * len(self._workers):
                self._go_serial(code, worker.served)
                return
            self._workers[index] = self._start()
            for job_id in lost:
                result = self._jobs.get(job_id)
                if result is None:
                    continue
                if job_id == culprit:
                    why = "killed" if code is not None and code < 0 else f"exit code {code}"
                    error = (
                        f"{result.record.path}: the post-processing worker died on this image ({why}: out of memory, "
                        "or killed); rerun the same command to try it again"
                    )
                    logger.warning("%s", error)
                    del self._jobs[job_id]
                    failed = ImageResult(result.record, result.image_hw, None, error)
                    self._done.append((failed, journal_entry(failed, self.spec.with_masks)))
                else:  # queued behind the lost image, or never started: to whichever worker is least busy
                    target = min(self._workers, key=lambda w: len(w.jobs))
                    self._assign(target, job_id)

    def _go_serial(self, code: int | None, served: int) -> None:
        """Workers keep dying before they start an image: do the rest in the main process, saying why."""
        logger.warning(
            "the post-processing workers cannot run here (they exit with code %s before starting an image%s); "
            "the main process does the work instead. A script that runs objdisc with --post-workers must keep its "
            'code under `if __name__ == "__main__":` (Python starts worker processes by importing the script)',
            code, "" if served == 0 else ", after some images",
        )  # fmt: skip
        self.close()
        self.serial = True
        for job_id in sorted(self._jobs):
            result = self._jobs.pop(job_id)
            self._done.append((result, post_process(self.spec, result)))

    def close(self) -> None:
        """Stop the workers (those still busy are terminated)."""
        for worker in self._workers:
            if worker.process.is_alive():
                try:
                    worker.inbox.put(None)
                except (OSError, ValueError):
                    pass
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=5)
        for worker in self._workers:
            worker.inbox.close()
            worker.inbox.cancel_join_thread()
            worker.results.close()
        self._workers = []

    def __enter__(self) -> PostPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_post(spec: PostSpec, workers: int) -> SerialPost | PostPool:
    """The serial path for ``workers == 0``, else a :class:`PostPool`."""
    return SerialPost(spec) if workers == 0 else PostPool(spec, workers)


__all__ = ["DEPTH", "PostPool", "SerialPost", "default_post_workers", "make_post"]
