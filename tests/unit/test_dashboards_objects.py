"""The Dashboards content without Dashboards: the saved objects have the shape 2.19 imports,
every reference resolves, ids are stable and scoped, and stamps round-trip.

What only a running Dashboards could check (that it draws them) cannot be checked here
(none runs on these machines); tests/cluster/test_dashboards.py runs every panel's
aggregation against a real node instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pacsguard.core.settings import Settings, load_settings
from pacsguard.packobjects import Stamp
from pacsguard.savedobjects import owned
from pacsguard.savedobjects.render import MIGRATION_VERSION, render_objects, to_ndjson
from pacsguard.savedobjects.spec import SavedObjectsError, load_content

DASHBOARD_TITLES = {"PACS security overview", "Logins", "Data leaving", "Access-control changes", "Alerts",
                    "User investigation"}
JSON_STRING_ATTRS = ("visState", "uiStateJSON", "panelsJSON", "optionsJSON")


def settings(**extra: Any) -> Settings:
    return load_settings(overrides=extra, environ={})


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render_objects(settings(), load_content())


def test_every_object_has_the_shape_dashboards_2_19_exports(objects: list[dict[str, Any]]) -> None:
    problems = []
    for obj in objects:
        where = f"{obj.get('type')} {obj.get('id')}"
        if set(obj) != {"type", "id", "attributes", "references", "migrationVersion"}:
            problems.append(f"{where}: keys {sorted(obj)}")
        if obj["migrationVersion"] != {obj["type"]: MIGRATION_VERSION[obj["type"]]}:
            problems.append(f"{where}: migrationVersion {obj['migrationVersion']}")
        attrs = obj["attributes"]
        if not attrs.get("title"):
            problems.append(f"{where}: no title")
        for name in JSON_STRING_ATTRS:
            if name in attrs:
                if not isinstance(attrs[name], str):
                    problems.append(f"{where}: {name} is not a JSON string")
                else:
                    json.loads(attrs[name])
        meta = attrs.get("kibanaSavedObjectMeta")
        if obj["type"] != "index-pattern":
            source = json.loads(meta["searchSourceJSON"])
            if "index" in source:
                problems.append(f"{where}: searchSourceJSON names an index pattern directly")
            if attrs.get("version") != 1:
                problems.append(f"{where}: attribute version {attrs.get('version')}")
        if obj["type"] == "visualization":
            state = json.loads(attrs["visState"])
            if state["title"] != attrs["title"] or not state["type"]:
                problems.append(f"{where}: visState title/type")
            for agg in state["aggs"]:
                if {"id", "enabled", "type", "schema", "params"} - set(agg):
                    problems.append(f"{where}: agg {agg}")
    assert not problems, "\n".join(problems)


def test_every_reference_resolves_to_an_object_of_the_named_type(objects: list[dict[str, Any]]) -> None:
    by_id = {(o["type"], o["id"]) for o in objects}
    problems = []
    for obj in objects:
        names = [r["name"] for r in obj["references"]]
        if len(names) != len(set(names)):
            problems.append(f"{obj['id']}: duplicate reference names")
        for ref in obj["references"]:
            if (ref["type"], ref["id"]) not in by_id:
                problems.append(f"{obj['id']}: {ref['name']} -> missing {ref['type']} {ref['id']}")
        attrs = obj["attributes"]
        wanted = set()
        if "kibanaSavedObjectMeta" in attrs:
            source = json.loads(attrs["kibanaSavedObjectMeta"]["searchSourceJSON"])
            if "indexRefName" in source:
                wanted.add(source["indexRefName"])
        if "panelsJSON" in attrs:
            wanted |= {p["panelRefName"] for p in json.loads(attrs["panelsJSON"])}
        if "visState" in attrs:
            for control in json.loads(attrs["visState"])["params"].get("controls", []):
                wanted.add(control["indexPatternRefName"])
        if wanted != set(names):
            problems.append(f"{obj['id']}: refers to {sorted(wanted)} but references {sorted(names)}")
    assert not problems, "\n".join(problems)


def test_the_six_dashboards_and_the_restricted_failure_pattern(objects: list[dict[str, Any]]) -> None:
    titles = {o["attributes"]["title"] for o in objects if o["type"] == "dashboard"}
    assert titles == DASHBOARD_TITLES
    patterns = {o["attributes"]["title"]: o for o in objects if o["type"] == "index-pattern"}
    assert {"logs-pacs.audit-default", "pacsguard-alerts-default", "pacsguard-failures-default"} <= set(patterns)
    assert patterns["pacsguard-failures-default"]["attributes"]["description"].startswith("RESTRICTED:")
    assert not patterns["logs-pacs.audit-default"]["attributes"]["description"].startswith("RESTRICTED")
    investigation = next(o for o in objects if o["attributes"]["title"] == "User investigation")
    panel_ids = {r["id"] for r in investigation["references"]}
    control = next(o for o in objects if o["id"] in panel_ids and o["type"] == "visualization"
                   and json.loads(o["attributes"]["visState"])["type"] == "input_control_vis")
    assert json.loads(control["attributes"]["visState"])["params"]["controls"][0]["fieldName"] == "related.user"


def test_ids_are_stable_and_scoped_to_the_installation() -> None:
    content = load_content()
    first = render_objects(settings(), content)
    again = render_objects(settings(), content)
    other = render_objects(settings(namespace="radiology"), content)
    assert to_ndjson(first) == to_ndjson(again)
    assert all(re.match(r"^pacsguard-default-(ip|vis|search|dash)-[a-z0-9-]+$", o["id"]) for o in first)
    assert not {o["id"] for o in first} & {o["id"] for o in other}
    assert {o["attributes"]["title"] for o in other if o["type"] == "index-pattern"} >= {"logs-pacs.audit-radiology"}


def test_dashboard_panels_do_not_overlap(objects: list[dict[str, Any]]) -> None:
    for dash in (o for o in objects if o["type"] == "dashboard"):
        cells: set[tuple[int, int]] = set()
        for panel in json.loads(dash["attributes"]["panelsJSON"]):
            g = panel["gridData"]
            assert g["x"] + g["w"] <= 48, dash["id"]
            area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not area & cells, f"{dash['id']}: panel {panel['panelIndex']} overlaps another"
            cells |= area


def test_stamp_round_trips_through_the_description(objects: list[dict[str, Any]]) -> None:
    obj = next(o for o in objects if o["type"] == "visualization")
    stamp = Stamp("pacsguard/default", "0.1.0", "0123456789abcdef")
    stamped = owned.stamped(obj, stamp)
    assert owned.stamp_of(stamped) == stamp
    assert stamped["attributes"]["description"].startswith(obj["attributes"]["description"])
    restamped = owned.stamped(stamped, Stamp("pacsguard/default", "0.2.0", "fedcba9876543210"))
    assert restamped["attributes"]["description"].count("[pacsguard") == 1
    assert owned.stamp_of(obj) is None


def test_bad_content_names_the_file_and_object(tmp_path: Any) -> None:
    from pacsguard.core.content import content_path

    for name in ("index-patterns.yaml", "visualizations.yaml", "searches.yaml", "dashboards.yaml"):
        (tmp_path / name).write_text(content_path("dashboards", name).read_text())
    text = (tmp_path / "dashboards.yaml").read_text().replace("ref: logins-map", "ref: logins-mapp")
    (tmp_path / "dashboards.yaml").write_text(text)
    with pytest.raises(SavedObjectsError, match="dashboard logins: panel 'logins-mapp' is no visualization"):
        load_content(tmp_path)
    text = (tmp_path / "visualizations.yaml").read_text().replace("type: date_histogram, schema: segment, field: "
                                                                  '"@timestamp"', "type: date_histogram, schema: "
                                                                  "segment", 1)
    (tmp_path / "visualizations.yaml").write_text(text)
    with pytest.raises(SavedObjectsError, match=r"visualizations.yaml: visualizations.0.aggs.1: .*needs a field"):
        load_content(tmp_path)


def test_dashboard_panels_carry_the_version_of_the_chosen_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Panels are stamped with the Dashboards version of the chosen line (PACSGUARD_OPENSEARCH_VERSION,
    default the dev node's 2.19.6), the way that Dashboards saves them."""
    for version in ("3.8.0", "2.19.6"):
        monkeypatch.setenv("PACSGUARD_OPENSEARCH_VERSION", version)
        dashboards = [o for o in render_objects(settings(), load_content()) if o["type"] == "dashboard"]
        assert dashboards
        assert {p["version"] for d in dashboards for p in json.loads(d["attributes"]["panelsJSON"])} == {version}
