"""Hops that cannot carry a transfer are relayed by the operator, remembered, and said.

Pure parts first (what an ssh failure means, the memory and its expiry, which hops of a
chain to relay, the notes), then real transfers, put and cp over fake hosts
(``leptonctl.testing.fake_agent``): a host whose sshd ignores ``authorized_keys`` is a
fake host that drops the transfer keys it is granted (as a central-keys sshd ignores
them); an unreachable pair is the fake's firewall (``blocks``).  The lab tests
(tests/test_lab_relay.py) do the same with real sshd.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from leptonctl.core.hops import (
    KEY_RECHECK_S,
    OPERATOR,
    PAIR_RECHECK_S,
    RelayedHop,
    classify_hop_error,
    memory_value,
    plan_relays,
    read_memory,
    segments,
)
from leptonctl.core.netgraph import RELAYED_PREFIX, LinkMeasurement, build_graph
from leptonctl.inventory import Inventory, parse_inventory
from leptonctl.remote.agent import AgentSessions, wire
from leptonctl.remote.hopmemory import HopMemory
from leptonctl.remote.transfer import Hop, TransferOutcome, Transfers
from leptonctl.render.net import link_list_table, link_matrix_table
from leptonctl.services.context import ServiceContext
from leptonctl.services.data import datasets
from leptonctl.services.data.replication import Replicator
from leptonctl.services.net import copy as copy_service
from leptonctl.store.sqlite import SqliteStore
from leptonctl.testing.fake_agent import FakeCluster

NOW = 1_900_000_000.0

# -- what an ssh failure means ---------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind", "detail"),
    [
        (
            "lost the connection to the next hop: [Errno 32] Broken pipe: "
            "lepu@10.0.0.3: Permission denied (publickey).",
            "key_refused",
            "publickey refused",
        ),
        (
            "ssh: connect to host 10.1.0.2 port 22: No route to host",
            "unreachable",
            "no route to host",
        ),
        (
            "ssh: connect to host h2 port 22: Connection refused",
            "unreachable",
            "connection refused",
        ),
        (
            "ssh: connect to host h2 port 22: Connection timed out",
            "unreachable",
            "connection timed out",
        ),
        (
            "ssh exited with status 255: Host key verification failed.",
            "host_key",
            "host key mismatch",
        ),
        ("@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @", "host_key", "host key mismatch"),
    ],
)
def test_ssh_failures_are_classified(error: str, kind: str, detail: str) -> None:
    assert classify_hop_error(error) == (kind, detail)


@pytest.mark.parametrize(
    "error", [None, "", "cannot store: No space left on device", "hash mismatch"]
)
def test_other_failures_are_not_relayed(error: str | None) -> None:
    assert classify_hop_error(error) is None


# -- the memory ------------------------------------------------------------------------


def test_a_remembered_verdict_holds_until_it_is_old_enough_to_try_again() -> None:
    value = memory_value(False, NOW, "publickey refused")
    assert read_memory(value, NOW + 10, KEY_RECHECK_S) == (False, "publickey refused")
    assert read_memory(value, NOW + KEY_RECHECK_S - 1, KEY_RECHECK_S) == (
        False,
        "publickey refused",
    )
    assert read_memory(value, NOW + KEY_RECHECK_S + 1, KEY_RECHECK_S) is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "not json",
        "[]",
        '{"usable": "no", "at": 1}',
        '{"usable": false}',
        json.dumps({"usable": False, "at": NOW + 3600}),
    ],
)
def test_an_unreadable_or_future_memory_means_nothing_is_known(value: str | None) -> None:
    assert read_memory(value, NOW, KEY_RECHECK_S) is None


class Values:
    """A state store's value table (the only part the memory uses)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def value(self, key: str) -> str | None:
        return self.values.get(key)

    def set_value(self, key: str, value: str) -> None:
        self.values[key] = value


def test_memory_is_kept_in_the_store_with_its_time_and_expires() -> None:
    values = Values()
    now = [NOW]
    memory = HopMemory(values, lambda: now[0])
    assert memory.refused("h3") is None
    reason = memory.remember_refused("h3")
    assert "h3's sshd ignores ~/.ssh/authorized_keys (central keys)" in reason
    memory.remember_cut("h1", "h2", "no route to host")
    stored = json.loads(values.values["hop-key:h3"])
    assert stored["usable"] is False and stored["at"] == NOW
    # a later command reads what this one learnt
    later = HopMemory(values, lambda: now[0] + 60)
    assert later.refused("h3") == reason
    assert later.cut("h1", "h2") == "h1 cannot connect to h2 (no route to host)"
    assert later.cut("h2", "h1") is None
    # and tries again once the finding is old
    much_later = HopMemory(values, lambda: now[0] + max(KEY_RECHECK_S, PAIR_RECHECK_S) + 1)
    assert much_later.refused("h3") is None
    assert much_later.cut("h1", "h2") is None


# -- which hops to relay ---------------------------------------------------------------


def test_only_the_hops_into_a_refusing_host_or_over_a_cut_pair_are_relayed() -> None:
    names = ["h1", "h2", "h3", "h4"]
    relays = plan_relays(names, False, {"h3": "central"}, {("h3", "h4"): "cut"})
    assert relays == {
        2: RelayedHop("h2", "h3", OPERATOR, "central"),
        3: RelayedHop("h3", "h4", OPERATOR, "cut"),
    }
    assert segments(3, list(relays)) == [(1, 1), (2, 2), (3, 3)]
    # a pumped first hop needs no key: it is never "relayed"
    assert plan_relays(["(operator)", "h3", "h2"], True, {"h3": "central"}, {}) == {}
    assert segments(2, []) == [(1, 2)]


def test_a_relay_note_says_who_what_and_why() -> None:
    hop = RelayedHop(
        "h1", "h3", OPERATOR, "h3's sshd ignores ~/.ssh/authorized_keys (central keys)"
    )
    assert hop.note == (
        "h1 -> h3 relayed by the operator: h3's sshd ignores ~/.ssh/authorized_keys (central keys)"
    )
    assert hop.to_dict() == {"from": "h1", "to": "h3", "via": OPERATOR, "reason": hop.reason}


def test_a_relayed_pair_is_routed_around_and_shown_as_relayed() -> None:
    measured = [
        LinkMeasurement("h1", "h2", NOW, None, None, RELAYED_PREFIX + "h1 cannot connect to h2"),
        LinkMeasurement("h1", "h3", NOW, 1e8, 0.001),
        LinkMeasurement("h3", "h2", NOW, 1e8, 0.001),
    ]
    g = build_graph(["h1", "h2", "h3"], measured, now=NOW)
    assert not g.has_edge("h1", "h2")
    assert g.graph["relayed"] == {("h1", "h2"): "h1 cannot connect to h2"}
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(link_matrix_table(g, ["h1", "h2", "h3"], NOW))
    console.print(link_list_table(g, ["h1", "h2", "h3"], NOW))
    text = console.export_text()
    assert "relay" in text and "relayed by us" in text and "✗" not in text


# -- transfers over fake hosts ----------------------------------------------------------


class IgnoredKeys(dict[str, str]):
    """A fake host's granted keys as a central-keys sshd sees them: never there."""

    def __init__(self) -> None:
        super().__init__()
        self.offered = 0

    def __setitem__(self, key: str, value: str) -> None:
        self.offered += 1


def fake_cluster(tmp_path: Path, text: str = "h1\nh2\nh3\nh4\n") -> tuple[FakeCluster, Inventory]:
    inventory = parse_inventory(text, "hosts.ini", fmt="ini")
    cluster = FakeCluster(tmp_path / "hosts")
    for host in inventory.hosts:
        cluster.add(host.name)
    return cluster, inventory


def transfer(
    cluster: FakeCluster,
    inventory: Inventory,
    source: str,
    chain: list[str],
    data: list[bytes],
    store: Any = None,
) -> TransferOutcome:
    digests = [cluster[source].add_chunk(d) for d in data]
    items = [wire.SendItem(len(d), hash=h) for d, h in zip(data, digests, strict=True)]

    async def go() -> TransferOutcome:
        async with cluster.pool() as pool:
            transfers = Transfers(AgentSessions(pool), store, lambda: NOW)
            hops = [Hop(inventory.host(n)) for n in chain]
            return await transfers.run(inventory.host(source), items, hops)

    return asyncio.run(go())


def blobs(n: int = 3) -> list[bytes]:
    rng = random.Random(n)
    return [rng.randbytes(1000 + i) for i in range(n)]


def test_a_hop_into_a_central_keys_host_is_relayed_and_remembered(tmp_path: Path) -> None:
    cluster, inventory = fake_cluster(tmp_path)
    cluster["h3"].keys = ignored = IgnoredKeys()
    values = Values()
    data = blobs()
    outcome = transfer(cluster, inventory, "h1", ["h2", "h3", "h4"], data, values)
    digests = [cluster["h1"].add_chunk(d) for d in data]
    for name in ("h2", "h3", "h4"):
        assert all(d in cluster[name].chunks() for d in digests), name
    assert not outcome.errors
    assert [r.to_dict() for r in outcome.relayed] == [
        {
            "from": "h2",
            "to": "h3",
            "via": OPERATOR,
            "reason": "h3's sshd ignores ~/.ssh/authorized_keys (central keys): "
            "it refused the one-shot transfer key",
        }
    ]
    assert json.loads(values.values["hop-key:h3"])["usable"] is False
    assert json.loads(values.values["hop-key:h2"])["usable"] is True
    assert ignored.offered == 1  # one failed try, then through the operator

    # the next command knows: it goes straight through the operator, no key offered
    more = blobs(2)
    again = transfer(cluster, inventory, "h1", ["h2", "h3"], more, values)
    assert not again.errors and [r.target for r in again.relayed] == ["h3"]
    assert ignored.offered == 1
    assert all(cluster["h1"].add_chunk(d) in cluster["h3"].chunks() for d in more)


def test_an_old_verdict_is_tried_again(tmp_path: Path) -> None:
    cluster, inventory = fake_cluster(tmp_path)
    values = Values()
    values.values["hop-key:h3"] = memory_value(False, NOW - KEY_RECHECK_S - 1, "old")
    outcome = transfer(cluster, inventory, "h1", ["h3"], blobs(), values)
    assert not outcome.errors and outcome.relayed == ()  # keys work there now
    assert json.loads(values.values["hop-key:h3"])["usable"] is True


def test_a_pair_that_cannot_connect_is_relayed(tmp_path: Path) -> None:
    cluster, inventory = fake_cluster(tmp_path)
    cluster["h2"].blocks = {"h1"}
    values = Values()
    data = blobs()
    outcome = transfer(cluster, inventory, "h1", ["h2", "h3"], data, values)
    assert not outcome.errors
    assert [r.note for r in outcome.relayed] == [
        "h1 -> h2 relayed by the operator: h1 cannot connect to h2 (connection refused)"
    ]
    for name in ("h2", "h3"):
        assert all(cluster["h1"].add_chunk(d) in cluster[name].chunks() for d in data)
    assert json.loads(values.values["hop-pair:h1>h2"])["usable"] is False


def test_a_host_key_mismatch_is_not_relayed_around(tmp_path: Path) -> None:
    # h3's data_address leads to h2: what answers there is not the host the operator
    # verified as h3 (a spoofed or re-keyed host)
    cluster, inventory = fake_cluster(tmp_path, "h1\nh2\nh3 data_address=h2\n")
    values = Values()
    data = blobs()
    outcome = transfer(cluster, inventory, "h1", ["h3"], data, values)
    assert outcome.relayed == ()
    error = outcome.errors["h3"]
    assert "not relayed around" in error and "security failure" in error
    assert not cluster["h3"].chunks()
    assert "hop-key:h3" not in values.values and "hop-pair:h1>h3" not in values.values


# -- services over fake hosts ----------------------------------------------------------


def run_command(
    cluster: FakeCluster, inventory: Inventory, store: SqliteStore, work: Callable[..., Any]
) -> Any:
    async def go() -> Any:
        async with (
            cluster.pool() as pool,
            ServiceContext(inventory, store=store, pool=pool, clock=lambda: NOW) as ctx,
        ):
            return await work(ctx)

    return asyncio.run(go())


def test_put_from_the_operator_relays_the_hop_into_a_central_keys_host(tmp_path: Path) -> None:
    cluster, inventory = fake_cluster(tmp_path, "h1\nh2\nh3\n")
    cluster["h3"].keys = IgnoredKeys()
    source = tmp_path / "data.bin"
    source.write_bytes(random.Random(7).randbytes(300_000))
    store = SqliteStore(tmp_path / "state.db")
    try:

        async def put_and_relays(ctx: ServiceContext) -> Any:
            report = await datasets.put(ctx, str(source), "ds", replicas=3, chunk_size=64 << 10)
            return report, Transfers(ctx.sessions).memory.relayed

        report, relayed = run_command(cluster, inventory, store, put_and_relays)
    finally:
        store.close()
    assert report.replicas == 3
    data = source.read_bytes()
    pieces = [data[i : i + (64 << 10)] for i in range(0, len(data), 64 << 10)]
    for name in ("h1", "h2", "h3"):
        held = cluster[name].chunks()
        assert all(cluster["h1"].add_chunk(p) in held for p in pieces), name
    assert any(r.target == "h3" and "central keys" in r.reason for r in relayed)


def test_replicator_reports_relayed_hops(tmp_path: Path) -> None:
    cluster, inventory = fake_cluster(tmp_path, "h1\nh2\nh3\n")
    cluster["h3"].keys = IgnoredKeys()
    digest = cluster["h1"].add_chunk(b"x" * 5000)
    store = SqliteStore(tmp_path / "state.db")
    try:

        async def repair(ctx: ServiceContext) -> Any:
            from leptonctl.core.datasets import ChunkRef

            replicator = Replicator(ctx.sessions, list(inventory.hosts), store=ctx.store)
            surveys = await replicator.survey([digest])
            return await replicator.place(
                [ChunkRef(digest, 5000)], 3, {digest: {"h1"}}, surveys, {}
            )

        placed = run_command(cluster, inventory, store, repair)
        assert json.loads(store.value("hop-key:h3") or "{}")["usable"] is False
    finally:
        store.close()
    assert placed.holders[digest] == {"h1", "h2", "h3"}
    assert placed.relay_notes == [
        "h2 -> h3 relayed by the operator: h3's sshd ignores ~/.ssh/authorized_keys "
        "(central keys): it refused the one-shot transfer key"
    ] or placed.relay_notes == [
        "h1 -> h3 relayed by the operator: h3's sshd ignores ~/.ssh/authorized_keys "
        "(central keys): it refused the one-shot transfer key"
    ]
    assert [r["to"] for r in (r.to_dict() for r in placed.relayed)] == ["h3"]


def test_cp_notes_say_a_blocked_hop_was_relayed(tmp_path: Path) -> None:
    # cp's files receivers are beyond the fake agent: its note logic is checked on the
    # outcomes a relayed transfer returns
    from leptonctl.core.reports import CopyReport
    from leptonctl.remote.transfer import HopOutcome

    relay = RelayedHop("h1", "h2", OPERATOR, "h1 cannot connect to h2 (no route to host)")
    outcome = TransferOutcome(
        (HopOutcome("h1", (), {}, None, 10), HopOutcome("h2", (), {}, None, 10)), 0.1, (relay,)
    )
    report = CopyReport(["h1", "h2"], 0, 0.0, 10, 0)
    copy_service._note_relays(report, [outcome, outcome])
    assert report.route == ["h1", OPERATOR, "h2"]
    assert report.notes == [
        "h1 -> h2 relayed by the operator: h1 cannot connect to h2 (no route to host)"
    ]
    assert report.relayed == [relay.to_dict()]


def test_a_host_that_failed_on_its_host_key_gets_nothing_more_in_that_placement(
    tmp_path: Path,
) -> None:
    # h2's data_address leads to h4: a chain hop into h2 meets h4's host key
    cluster, inventory = fake_cluster(tmp_path, "h1\nh2 data_address=h4\nh3\nh4\n")
    digest = cluster["h1"].add_chunk(b"y" * 5000)
    store = SqliteStore(tmp_path / "state.db")
    try:

        async def place(ctx: ServiceContext) -> Any:
            from leptonctl.core.datasets import ChunkRef

            replicator = Replicator(ctx.sessions, list(inventory.hosts), store=ctx.store)
            surveys = await replicator.survey([digest])
            placed = await replicator.place(
                [ChunkRef(digest, 5000)], 4, {digest: {"h1"}}, surveys, {}
            )
            return placed, replicator.untrusted

        placed, untrusted = run_command(cluster, inventory, store, place)
    finally:
        store.close()
    assert untrusted == {"h2"}
    assert digest not in cluster["h2"].chunks()  # never relayed around the mismatch
    assert placed.holders[digest] == {"h1", "h3", "h4"}
    assert "not relayed around" in placed.problems["h2"]
    assert placed.relayed == []
