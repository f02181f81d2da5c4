"""``deepaq score --jobs N``: CPU worker processes, each with its own loaded model.

Why processes: the shipped model is small and runs one torch thread per forward pass (many tiny
ops gain nothing from intra-op threads), so cores are used by scoring several pairs at once.
Rows are sent in consecutive blocks (a reference's rows mostly share a block, so its embedding is
reused) and come back in input order; a failing row comes back as its error text. Workers are
started with ``spawn`` (no forked torch state) and exit when the parent process dies.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

_WORKER: dict[str, Any] = {}


def _exit_with_parent(parent: int) -> None:
    """A killed parent (kill -9) must not leave workers waiting forever on the task queue."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _init(args: argparse.Namespace, centroid: Any, threads: int) -> None:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    import torch

    torch.set_num_threads(threads)
    from deepaq.score_cli import _error_text, _load_backend

    try:
        _WORKER["backend"] = _load_backend(args, centroid)
    except Exception as exc:  # noqa: BLE001 - reported on every row this worker gets
        _WORKER["error"] = f"worker could not load the scorer: {_error_text(exc)}"


def _run(block: tuple[int, list[dict]]) -> list[tuple[int, Any]]:
    from deepaq.score_cli import _error_text

    first, items = block
    if "backend" not in _WORKER:
        return [(first + i, _WORKER["error"]) for i in range(len(items))]
    out = []
    for i, result in _WORKER["backend"].iter_rows(items):
        out.append((first + i, _error_text(result) if isinstance(result, BaseException)
                    else result))
    return out


def score_in_workers(args: argparse.Namespace, items: list[dict], centroid: Any = None,
                     block_rows: int | None = None) -> Iterator[tuple[int, Any]]:
    """``(index, result dict or error text)`` for every item, in input order."""
    import multiprocessing as mp

    jobs = max(1, int(args.jobs))
    block = block_rows or max(1, int(args.batch_size)) * 4
    blocks = [(k, items[k:k + block]) for k in range(0, len(items), block)]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = mp.get_context("spawn")
    with ctx.Pool(jobs, initializer=_init, initargs=(args, centroid, threads)) as pool:
        for results in pool.imap(_run, blocks):
            yield from results
