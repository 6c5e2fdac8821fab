"""Render the Dashboards content into the saved objects OpenSearch Dashboards imports.

Each object is {type, id, attributes, references, migrationVersion} as 2.19
exports it (dashboard panels carry the Dashboards version of the chosen line,
devnode.lines.chosen_version: PACSGUARD_OPENSEARCH_VERSION, default 2.19.6): visState, uiStateJSON, panelsJSON and searchSourceJSON are JSON
strings, and an index pattern is named only through `references`
(`indexRefName` / `panelRefName` / `control_0_index_pattern`), never by title,
so importing into another tenant or renaming a pattern keeps every link.
migrationVersion tells Dashboards which of its migrations the object already
has, so it imports as is. The export's object-level `version` (an encoded
sequence number of the exporting cluster) is left out: on import it would be
taken as an optimistic-concurrency check against objects that do not exist.
"""

from __future__ import annotations

import json
from typing import Any

from pacsguard.core.settings import Settings
from pacsguard.devnode.lines import chosen_version
from pacsguard.savedobjects.spec import AggSpec, Content, DashboardSpec, IndexPatternSpec, SearchSpec, VisSpec

# The migrations Dashboards 2.19 has run on what it exports (its newest per type).
MIGRATION_VERSION = {"index-pattern": "7.6.0", "visualization": "7.10.0", "search": "7.9.3", "dashboard": "7.9.3"}
INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
RESTRICTED_MARK = "RESTRICTED"
GRID_COLUMNS = 48


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=False)


def object_id(settings: Settings, kind: str, key: str) -> str:
    """Stable ids in the installation's scope: two namespaces never overwrite each other's objects."""
    short = {"index-pattern": "ip", "visualization": "vis", "search": "search", "dashboard": "dash"}[kind]
    return f"{settings.scope}-{short}-{key}"


def pattern_title(settings: Settings, spec: IndexPatternSpec) -> str:
    """An index pattern's title is the pattern itself (here: the one index or data stream)."""
    return settings.index(spec.index)


def pattern_description(spec: IndexPatternSpec) -> str:
    return f"{RESTRICTED_MARK}: {spec.description}" if spec.restricted else spec.description


def index_pattern(settings: Settings, spec: IndexPatternSpec) -> dict[str, Any]:
    # `fields` is left out: Dashboards reads the field list from the cluster the first time the
    # pattern is used, so the pattern always matches the mapping the pack installed.
    return {"type": "index-pattern", "id": object_id(settings, "index-pattern", spec.key),
            "attributes": {"title": pattern_title(settings, spec), "timeFieldName": spec.time_field,
                           "description": pattern_description(spec)},
            "references": [], "migrationVersion": {"index-pattern": MIGRATION_VERSION["index-pattern"]}}


# ------------------------------------------------------------------ aggregations


def agg_params(agg: AggSpec) -> dict[str, Any]:
    label = {"customLabel": agg.label} if agg.label else {}
    if agg.type == "count":
        return label
    if agg.is_metric:
        return {"field": agg.field, **label}
    if agg.type == "terms":
        return {"field": agg.field, "orderBy": agg.order_by, "order": "desc", "size": agg.size,
                "otherBucket": False, "otherBucketLabel": "Other", "missingBucket": False,
                "missingBucketLabel": "Missing", **label}
    if agg.type == "date_histogram":
        return {"field": agg.field, "useNormalizedOpenSearchInterval": True, "scaleMetricValues": False,
                "interval": agg.interval, "drop_partials": False, "min_doc_count": 1, "extended_bounds": {},
                **label}
    if agg.type == "filters":
        return {"filters": [{"input": {"query": f.query, "language": "lucene"}, "label": f.label}
                            for f in agg.filters]}
    # geohash_grid
    return {"field": agg.field, "autoPrecision": False, "precision": agg.precision, "useGeocentroid": True,
            "isFilteredByCollar": True, "mapZoom": 2, "mapCenter": [30, 0], **label}


def _aggs(vis: VisSpec) -> list[dict[str, Any]]:
    return [{"id": str(i), "enabled": True, "type": a.type, "schema": a.schema_name, "params": agg_params(a)}
            for i, a in enumerate(vis.aggs, 1)]


def _xy_params(vis: VisSpec) -> dict[str, Any]:
    """Parameters of the vislib bar/line/area charts, as the 2.19 editor saves them."""
    chart = {"histogram": "histogram", "horizontal_bar": "histogram", "line": "line", "area": "area"}[vis.type]
    horizontal = vis.type == "horizontal_bar"
    first_metric = vis.metrics[0]
    label = first_metric[1].label or ("Count" if first_metric[1].type == "count" else first_metric[1].field)
    return {
        "type": chart, "addTooltip": True, "addLegend": True, "legendPosition": "right", "times": [],
        "addTimeMarker": False, "grid": {"categoryLines": False},
        "labels": {"show": False}, "thresholdLine": {"show": False, "value": 10, "width": 1, "style": "full",
                                                     "color": "#E7664C"},
        "categoryAxes": [{"id": "CategoryAxis-1", "type": "category",
                          "position": "left" if horizontal else "bottom", "show": True, "style": {},
                          "scale": {"type": "linear"}, "labels": {"show": True, "filter": True, "truncate": 100},
                          "title": {}}],
        "valueAxes": [{"id": "ValueAxis-1", "name": "LeftAxis-1", "type": "value",
                       "position": "bottom" if horizontal else "left", "show": True, "style": {},
                       "scale": {"type": "linear", "mode": "normal"},
                       "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                       "title": {"text": label}}],
        "seriesParams": [{"show": True, "type": "line" if chart == "line" else ("area" if chart == "area" else
                                                                                "histogram"),
                          "mode": "stacked" if chart != "line" else "normal",
                          "data": {"label": label, "id": first_metric[0]}, "valueAxis": "ValueAxis-1",
                          "drawLinesBetweenPoints": True, "lineWidth": 2, "showCircles": True,
                          "interpolate": "linear"}],
    }


def vis_params(settings: Settings, vis: VisSpec) -> dict[str, Any]:
    if vis.type in ("histogram", "horizontal_bar", "line", "area"):
        return _xy_params(vis)
    if vis.type == "pie":
        return {"type": "pie", "addTooltip": True, "addLegend": True, "legendPosition": "right", "isDonut": True,
                "labels": {"show": True, "values": True, "last_level": True, "truncate": 100}}
    if vis.type == "table":
        return {"perPage": 10, "showPartialRows": False, "showMetricsAtAllLevels": False, "showTotal": False,
                "totalFunc": "sum", "percentageCol": ""}
    if vis.type == "metric":
        return {"addTooltip": True, "addLegend": False, "type": "metric",
                "metric": {"percentageMode": False, "useRanges": False, "colorSchema": "Green to Red",
                           "metricColorMode": "None", "colorsRange": [{"from": 0, "to": 10000}],
                           "labels": {"show": True}, "invertColors": False,
                           "style": {"bgFill": "#000", "bgColor": False, "labelColor": False, "subText": "",
                                     "fontSize": 60}}}
    if vis.type == "tile_map":
        return {"mapType": "Scaled Circle Markers", "isDesaturated": True, "addTooltip": True,
                "heatClusterSize": 1.5, "legendPosition": "bottomright", "mapZoom": 2, "mapCenter": [30, 0],
                "wms": {"enabled": False, "options": {"format": "image/png", "transparent": True}}}
    # input_control_vis: one list control; Dashboards finds its index pattern through references
    return {"controls": [{"id": "1", "fieldName": vis.control_field, "parent": "", "label": vis.title,
                          "type": "list", "options": {"type": "terms", "multiselect": False,
                                                      "dynamicOptions": True, "size": 10, "order": "desc"},
                          "indexPatternRefName": "control_0_index_pattern"}],
            "updateFiltersOnChange": True, "useTimeFilter": True, "pinFilters": False}


def visualization(settings: Settings, content: Content, vis: VisSpec) -> dict[str, Any]:
    pattern_id = object_id(settings, "index-pattern", vis.index)
    if vis.type == "input_control_vis":
        search_source: dict[str, Any] = {"query": {"query": "", "language": "lucene"}, "filter": []}
        references = [{"name": "control_0_index_pattern", "type": "index-pattern", "id": pattern_id}]
    else:
        search_source = {"query": {"query": vis.query, "language": "lucene"}, "filter": [],
                         "indexRefName": INDEX_REF}
        references = [{"name": INDEX_REF, "type": "index-pattern", "id": pattern_id}]
    state = {"title": vis.title, "type": vis.type, "aggs": _aggs(vis), "params": vis_params(settings, vis)}
    return {"type": "visualization", "id": object_id(settings, "visualization", vis.key),
            "attributes": {"title": vis.title, "description": vis.description, "version": 1,
                           "visState": _json(state), "uiStateJSON": "{}",
                           "kibanaSavedObjectMeta": {"searchSourceJSON": _json(search_source)}},
            "references": references, "migrationVersion": {"visualization": MIGRATION_VERSION["visualization"]}}


def saved_search(settings: Settings, search: SearchSpec) -> dict[str, Any]:
    source = {"query": {"query": search.query, "language": "lucene"}, "filter": [], "indexRefName": INDEX_REF}
    return {"type": "search", "id": object_id(settings, "search", search.key),
            "attributes": {"title": search.title, "description": search.description, "hits": 0, "version": 1,
                           "columns": list(search.columns), "sort": [["@timestamp", "desc"]],
                           "kibanaSavedObjectMeta": {"searchSourceJSON": _json(source)}},
            "references": [{"name": INDEX_REF, "type": "index-pattern",
                            "id": object_id(settings, "index-pattern", search.index)}],
            "migrationVersion": {"search": MIGRATION_VERSION["search"]}}


def dashboard(settings: Settings, content: Content, dash: DashboardSpec, version: str) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    references: list[dict[str, Any]] = []
    x = y = row_h = 0
    for i, panel in enumerate(dash.panels):
        if x + panel.w > GRID_COLUMNS:  # next row
            x, y, row_h = 0, y + row_h, 0
        is_search = panel.ref in content.searches_by_key
        kind = "search" if is_search else "visualization"
        panels.append({"version": version, "gridData": {"x": x, "y": y, "w": panel.w, "h": panel.h, "i": str(i + 1)},
                       "panelIndex": str(i + 1), "embeddableConfig": {}, "panelRefName": f"panel_{i}"})
        references.append({"name": f"panel_{i}", "type": kind, "id": object_id(settings, kind, panel.ref)})
        x, row_h = x + panel.w, max(row_h, panel.h)
    source = {"query": {"query": dash.query, "language": "lucene"}, "filter": []}
    return {"type": "dashboard", "id": object_id(settings, "dashboard", dash.key),
            "attributes": {"title": dash.title, "description": dash.description, "hits": 0, "version": 1,
                           "panelsJSON": _json(panels),
                           "optionsJSON": _json({"hidePanelTitles": False, "useMargins": True}),
                           "timeRestore": True, "timeFrom": dash.time_from, "timeTo": "now",
                           "refreshInterval": {"pause": False, "value": 60000},
                           "kibanaSavedObjectMeta": {"searchSourceJSON": _json(source)}},
            "references": references, "migrationVersion": {"dashboard": MIGRATION_VERSION["dashboard"]}}


def render_objects(settings: Settings, content: Content) -> list[dict[str, Any]]:
    """Every saved object, in an order where each one's references come before it."""
    out = [index_pattern(settings, p) for p in content.index_patterns]
    out += [saved_search(settings, s) for s in content.searches]
    out += [visualization(settings, content, v) for v in content.visualizations]
    version = chosen_version()
    out += [dashboard(settings, content, d, version) for d in content.dashboards]
    return out


def to_ndjson(objects: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(o, separators=(",", ":")) + "\n" for o in objects)
