"""What every command needs from the global options: hosts, transport knobs, the store."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer

from leptonctl.inventory import Host, Inventory, load_inventory, select_hosts
from leptonctl.paths import default_state_path
from leptonctl.remote.transport import TransportOptions
from leptonctl.store.sqlite import SqliteStore

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    inventory_path: Path | None
    state_path: Path | None
    forks: int
    connect_timeout: float
    command_timeout: float
    accept_new_host_keys: bool

    def inventory(self) -> Inventory:
        return load_inventory(self.inventory_path)

    def hosts(self, limit: str | None) -> tuple[Inventory, tuple[Host, ...]]:
        inventory = self.inventory()
        return inventory, select_hosts(inventory, limit)

    def transport(self) -> TransportOptions:
        return TransportOptions(
            forks=self.forks,
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            accept_new_host_keys=self.accept_new_host_keys,
        )

    def store(self) -> SqliteStore:
        return SqliteStore(self.state_path or default_state_path())


def settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """The one ``asyncio.run`` of a command."""
    return asyncio.run(coro)
