"""The Grafana dashboard: loadable by PMOVES' provisioning, datasource by variable, real metric names."""

from __future__ import annotations

import pytest

from tests.deploy.artifacts import (
    Query,
    dashboard,
    dashboard_queries,
    exported_families,
    exported_sample_names,
    panels,
)

# The panels the issue asks for, by title.
REQUIRED_PANELS = {
    "Throughput by outcome",
    "Backlog",
    "ETA",
    "Dead letters by reason",
    "Processing latency",
    "Upstream errors by service",
    "Upstream latency p95 by service",
    "In flight per replica",
    "Republish rate vs pace",
    "DLQ depth",
    "Resolutions by method",
}


def test_dashboard_has_a_stable_identity_for_provisioning() -> None:
    """Fixed uid and title, no numeric id (Grafana assigns one), a schema version Grafana 11 reads."""
    board = dashboard()
    assert board["uid"] == "pmoves-jellyfin-backfill"
    assert board["title"] == "PMOVES Jellyfin backfill"
    assert board["id"] is None
    assert 36 <= board["schemaVersion"] <= 41


def test_datasource_is_chosen_by_a_prometheus_datasource_variable() -> None:
    """A `datasource` template variable of type datasource (prometheus), used by every panel and target."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(dashboard()):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_pace_variable_defaults_to_discords_thirty_messages_a_minute() -> None:
    """The republish pace reference is a `pace` variable, 0.5 per second by default."""
    pace = {v["name"]: v for v in dashboard()["templating"]["list"]}["pace"]
    assert pace["query"] == "0.5"
    assert pace["current"]["value"] == "0.5"
    assert any("$pace" in q.expr for q in dashboard_queries())


def test_dashboard_has_every_panel_the_operators_need() -> None:
    """Throughput, backlog with ETA, dead letters, latency, upstreams, in-flight, pace, DLQ, resolutions."""
    titles = {panel["title"] for panel in panels(dashboard())}
    assert titles >= REQUIRED_PANELS


def test_panels_have_unique_ids_titles_and_query_refs() -> None:
    """Panel ids and titles are unique, and so are refIds within a panel: every query is named once."""
    found = panels(dashboard())
    assert len({panel["id"] for panel in found}) == len(found)
    assert len({panel["title"] for panel in found}) == len(found)
    wheres = [query.where for query in dashboard_queries()]
    assert len(set(wheres)) == len(wheres)


@pytest.mark.parametrize("query", dashboard_queries(), ids=lambda q: q.where)
def test_every_panel_query_uses_only_metrics_the_programs_export(query: Query) -> None:
    """Each backfill_* name in a query is a sample name the worker or the producer's push really exposes."""
    unknown = query.metric_names() - exported_sample_names()
    assert not unknown, f"{query.where}: unknown metrics {sorted(unknown)} in {query.expr}"
    assert query.metric_names() or query.expr.startswith("vector("), f"{query.where} queries no metric"


def test_every_exported_metric_family_is_on_the_dashboard() -> None:
    """No family the worker or producer exports is left unwatched (build info is counted by 'Workers up')."""
    used = set().union(*(q.metric_names() for q in dashboard_queries()))
    for family, kind in exported_families().items():
        assert any(name.startswith(family) for name in used), f"{family} ({kind}) is on no panel"


def test_panels_do_not_overlap_on_the_grid() -> None:
    """Every panel has its own cells on the 24-column grid."""
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_the_watcher_row_shows_its_last_pass_lease_enqueues_replays_and_what_waits_for_an_operator() -> None:
    """A row for `producer watch` after the existing ones: the last pass against its stall threshold, the
    lease holder, rows enqueued per pass by reason, dead letters replayed by trigger, rows waiting."""
    board = dashboard()
    rows = [panel for panel in board["panels"] if panel["type"] == "row"]
    assert rows[-1]["title"] == "Watcher (producer watch)"
    exprs = {panel["title"]: [t["expr"] for t in panel["targets"]] for panel in panels(board)}
    assert "time() - max(backfill_watch_last_pass_timestamp_seconds)" in exprs["Watcher: last pass"]
    assert "3 * max(backfill_watch_interval_seconds)" in exprs["Watcher: last pass"]
    assert any("backfill_watch_lease_holder" in e for e in exprs["Watcher: lease"])
    assert any("by (reason)" in e for e in exprs["Watcher: rows enqueued by reason"])
    assert any("by (reason, trigger)" in e for e in exprs["Watcher: dead letters replayed"])
    assert any("backfill_watch_dead_letters_waiting" in e for e in exprs["Waiting for an operator"])
    watch_panels = [p for p in board["panels"] if p["gridPos"]["y"] > rows[-1]["gridPos"]["y"]]
    assert len(watch_panels) == 8 and all("watch" in str(p["targets"]) for p in watch_panels)
