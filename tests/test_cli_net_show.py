"""`net show` driven through its Typer sub-app, on a real inventory file and state store.

The sub-app is mounted on a small root here: registering it in ``leptonctl.cli.app`` is
left to ``net probe``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from leptonctl.cli import net
from leptonctl.cli.context import Settings
from leptonctl.core.netgraph import LinkMeasurement
from leptonctl.errors import InventoryError, LimitError, NetGraphError, UsageError
from leptonctl.store.sqlite import SqliteStore

INVENTORY = """\
all:
  hosts:
    a:
      ansible_connection: local
      links: {b: {bandwidth: 1Gbit, latency: 0.3ms}}
    b: {ansible_connection: local}
    c: {ansible_connection: local}
"""


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[Path, Path]:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY)
    state = tmp_path / "state.db"
    now = time.time()
    with SqliteStore(state) as store:
        store.links.save(
            [
                LinkMeasurement("a", "c", now - 60, 1.25e9, 0.0001),
                LinkMeasurement("c", "b", now - 60, 1.25e9, 0.0002),
                LinkMeasurement("b", "a", now - 60, None, None, "no route to host"),
                LinkMeasurement("c", "a", now - 7200, 1.25e9, 0.0001),  # two hours old
            ]
        )
    return inventory, state


def net_show(cluster: tuple[Path, Path], *args: str) -> tuple[str, BaseException | None]:
    inventory, state = cluster
    root = typer.Typer()

    @root.callback()
    def options(ctx: typer.Context) -> None:
        ctx.obj = Settings(inventory, state, 1, 1.0, 1.0, False)

    root.add_typer(net.app, name="net")
    result = CliRunner().invoke(root, ["net", "show", *args], catch_exceptions=True)
    return result.output, result.exception


def test_the_json_matrix_has_measured_links_hints_and_unreachable_pairs(
    cluster: tuple[Path, Path],
) -> None:
    out, error = net_show(cluster, "--json")
    assert error is None
    doc = json.loads(out)
    assert doc["hosts"] == ["a", "b", "c"]
    links = {(x["src"], x["dst"]): x["source"] for x in doc["links"]}
    assert links == {("a", "b"): "hint", ("a", "c"): "measured", ("c", "a"): "measured",
                     ("c", "b"): "measured"}  # fmt: skip
    assert doc["unreachable"] == [{"src": "b", "dst": "a", "error": "no route to host"}]


def test_max_age_drops_old_measurements(cluster: tuple[Path, Path]) -> None:
    out, _ = net_show(cluster, "--json", "--max-age", "3600")
    assert ("c", "a") not in {(x["src"], x["dst"]) for x in json.loads(out)["links"]}


def test_limit_keeps_to_the_selected_hosts(cluster: tuple[Path, Path]) -> None:
    out, _ = net_show(cluster, "--json", "--limit", "a,c")
    doc = json.loads(out)
    assert doc["hosts"] == ["a", "c"]
    assert {(x["src"], x["dst"]) for x in doc["links"]} == {("a", "c"), ("c", "a")}


def test_the_matrix_is_printed_for_people(cluster: tuple[Path, Path]) -> None:
    out, error = net_show(cluster)
    assert error is None
    assert "10G" in out and "1G*" in out and "✗" in out


def test_a_route_is_explained_and_printed_as_json(cluster: tuple[Path, Path]) -> None:
    out, error = net_show(cluster, "--route", "a", "b")
    assert error is None
    assert "route a → c → b" in out
    out, _ = net_show(cluster, "--route", "a", "b", "--json")
    doc = json.loads(out)
    assert doc["route"] == ["a", "c", "b"] and doc["relayed"] is True
    assert doc["direct_bps"] == 1.25e8


def test_no_route_is_an_error_that_says_to_probe(cluster: tuple[Path, Path]) -> None:
    _, error = net_show(cluster, "--route", "b", "a")
    assert isinstance(error, NetGraphError)
    assert "no route from b to a" in error.message and "no route to host" in error.message
    assert error.hint is not None and "leptonctl net probe" in error.hint


def test_route_names_are_checked_against_the_inventory_and_the_limit(
    cluster: tuple[Path, Path],
) -> None:
    _, error = net_show(cluster, "--route", "a", "bb")
    assert isinstance(error, LimitError) and "bb" in error.message
    _, error = net_show(cluster, "--route", "a", "c", "--limit", "a,b")
    assert isinstance(error, UsageError) and "c is not among" in error.message
    _, error = net_show(cluster, "--route", "a", "a")
    assert isinstance(error, UsageError) and "two different hosts" in error.message


def test_a_bad_hint_in_the_inventory_is_reported(cluster: tuple[Path, Path]) -> None:
    inventory, _ = cluster
    inventory.write_text(INVENTORY.replace("1Gbit", "fast"))
    _, error = net_show(cluster, "--json")
    assert isinstance(error, InventoryError)
    assert "links.b.bandwidth" in str(error) and "host a" in str(error)
