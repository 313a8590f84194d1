"""Micro-batching for ``headstart serve``: the items of concurrent ``/predict`` requests go to
the model in one call.

A :class:`MicroBatcher` owns one worker thread (started on the first request, gone after
``idle_s`` without any). Each request hands its decoded items to :meth:`MicroBatcher.submit`
and awaits the result; the worker takes the oldest waiting request, then every further one that
arrives within ``wait_s`` while the total stays within ``max_batch`` items, runs the model once
on their concatenation and splits the ``(N, C)`` probabilities back per request. A request is
never split (one larger than ``max_batch`` runs alone), and when a combined call fails each
request is run again on its own, so a request the model cannot take fails alone.

The model runs on the worker thread only: never on the event loop, never two calls at once.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: ``items -> (len(items), C)`` probabilities, e.g. ``ExportedPredictor.probabilities``
RunModel = Callable[[list[Any]], np.ndarray]


@dataclass
class Job:
    """One request's items and the future its probabilities are delivered to."""

    items: list[Any]
    future: Future[np.ndarray] = field(default_factory=Future)


class MicroBatcher:
    """Combines concurrent requests into one model call (see the module docstring)."""

    def __init__(
        self, run: RunModel, max_batch: int = 32, wait_s: float = 0.005, idle_s: float = 30.0
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if wait_s < 0:
            raise ValueError(f"wait_s must not be negative, not {wait_s}")
        self.run, self.max_batch, self.wait_s, self.idle_s = run, max_batch, wait_s, idle_s
        self.queue: queue.Queue[Job] = queue.Queue()
        self.lock = threading.Lock()  # guards starting and retiring the worker
        self.worker: threading.Thread | None = None
        self.held: Job | None = None  # a job that did not fit the last batch (worker only)
        self.calls = 0  # model calls made

    def submit(self, items: Sequence[Any]) -> Future[np.ndarray]:
        """Queue one request's items; the future gets their ``(len(items), C)`` probabilities
        or the exception the model raised on them."""
        job = Job(list(items))
        with self.lock:
            self.queue.put(job)
            if self.worker is None:
                self.worker = threading.Thread(
                    target=self.work, name="headstart-batcher", daemon=True
                )
                self.worker.start()
        return job.future

    async def __call__(self, items: Sequence[Any]) -> np.ndarray:
        """:meth:`submit` for a coroutine: awaits the probabilities without blocking the loop."""
        return await asyncio.wrap_future(self.submit(items))

    def work(self) -> None:
        """The worker thread: batches until ``idle_s`` pass without a request."""
        while True:
            first, self.held = self.held, None
            if first is None:
                try:
                    first = self.queue.get(timeout=self.idle_s)
                except queue.Empty:
                    with self.lock:
                        if self.queue.empty():
                            self.worker = None
                            return
                    continue
            self.run_jobs(self.collect(first))

    def collect(self, first: Job) -> list[Job]:
        """``first`` and the jobs that arrive within ``wait_s`` of it (or are already waiting),
        up to ``max_batch`` items; a job that would overflow is held for the next batch.
        Cancelled jobs (their client went away) are dropped."""
        jobs = [first] if first.future.set_running_or_notify_cancel() else []
        size = sum(len(j.items) for j in jobs)
        deadline = time.monotonic() + self.wait_s
        while size < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = (
                    self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
                )
            except queue.Empty:
                break
            if size + len(job.items) > self.max_batch and jobs:
                self.held = job
                break
            if job.future.set_running_or_notify_cancel():
                jobs.append(job)
                size += len(job.items)
        return jobs

    def run_jobs(self, jobs: list[Job]) -> None:
        """One model call on the jobs' items, split back per job; on failure, each job alone."""
        if not jobs:
            return
        try:
            probs = self.call([it for j in jobs for it in j.items])
        except Exception as err:
            if len(jobs) == 1:
                jobs[0].future.set_exception(err)
            else:  # one request's items must not fail the others': retry them one by one
                for job in jobs:
                    self.run_jobs([job])
            return
        start = 0
        for job in jobs:
            job.future.set_result(probs[start : start + len(job.items)])
            start += len(job.items)

    def call(self, items: list[Any]) -> np.ndarray:
        """The model on ``items``, checked to give one row per item."""
        self.calls += 1
        probs = np.asarray(self.run(items))
        if probs.shape[0] != len(items):
            raise RuntimeError(f"the model gave {probs.shape[0]} rows for {len(items)} items")
        return probs
