"""One lock between the commands that count chunks as stored and those that delete them.

``data put`` adopts a chunk that a host already holds instead of sending it again;
``data rm``, ``gc`` and ``rebalance`` delete chunk files.  Were they to overlap, a put
could count a copy that is deleted a moment later.  Puts (and repair, get) share the lock;
deleting commands take it alone and wait for running puts to finish.  The lock is the
store's lock ``data`` (a file next to a SQLite store, an advisory lock in PostgreSQL), so
it covers every terminal and cron job using that store, on every machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from leptonctl.store.interface import Store


@asynccontextmanager
async def data_lock(store: Store, exclusive: bool) -> AsyncIterator[None]:
    held = store.lock("data", shared=not exclusive)
    # Waiting blocks a thread, not the loop.  Cancelled while waiting, the lock is let go
    # as soon as the thread gets it.
    waiting = asyncio.ensure_future(asyncio.to_thread(held.__enter__))
    try:
        await asyncio.shield(waiting)
    except asyncio.CancelledError:
        waiting.add_done_callback(lambda _: held.__exit__(None, None, None))
        raise
    try:
        yield
    finally:
        held.__exit__(None, None, None)
