"""One lock between the commands that count chunks as stored and those that delete them.

``data put`` adopts a chunk that a host already holds instead of sending it again;
``data rm``, ``gc`` and ``rebalance`` delete chunk files.  Were they to overlap, a put
could count a copy that is deleted a moment later.  Puts (and repair, get) share the lock;
deleting commands take it alone and wait for running puts to finish.  The lock is a file
next to the state store, so it covers every terminal and cron job using that store.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from leptonctl.store.interface import Store


@asynccontextmanager
async def data_lock(store: Store, exclusive: bool) -> AsyncIterator[None]:
    path = store.path.with_name(store.path.name + ".data.lock")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        await asyncio.to_thread(fcntl.flock, fd, mode)  # waits without blocking the loop
        yield
    finally:
        os.close(fd)  # closing releases the lock
