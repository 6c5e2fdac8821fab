"""The typed form of the Dashboards content under dashboards/ (content is data).

A visualization is written once, as a spec: which index pattern, a Lucene query,
and its aggregations in the vocabulary of Dashboards' own editor (metrics and
buckets with a schema). The renderer turns it into a saved object; the search
builder turns the same spec into an OpenSearch query, which is how the tests
and the console run exactly what a Dashboards panel would ask for.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from pacsguard.core.content import content_path
from pacsguard.core.errors import PacsguardError
from pacsguard.core.models import Frozen

KEY = r"^[a-z][a-z0-9-]*$"
METRIC_AGGS = ("count", "cardinality", "sum", "max", "min", "avg")
BUCKET_AGGS = ("terms", "date_histogram", "filters", "geohash_grid")
VIS_TYPES = ("histogram", "line", "area", "horizontal_bar", "pie", "table", "metric", "tile_map", "input_control_vis")


class SavedObjectsError(PacsguardError):
    """The Dashboards content is invalid; the message names the file and the object."""


class IndexPatternSpec(Frozen):
    key: str = Field(pattern=KEY)
    index: str  # a key of the settings' indices (events_data_stream, alerts, failures, ...)
    time_field: str = "@timestamp"
    description: str
    restricted: bool = False  # raw events that failed their pipeline: may hold what ingest would have hashed


class FilterSpec(Frozen):
    label: str
    query: str  # Lucene, as Dashboards sends it (query_string)


class AggSpec(Frozen):
    type: Literal["count", "cardinality", "sum", "max", "min", "avg",
                  "terms", "date_histogram", "filters", "geohash_grid"]
    schema_name: str = Field(alias="schema")  # metric | segment | group | bucket | split
    field: str | None = None
    label: str | None = None
    size: int = Field(default=10, ge=1, le=500)  # terms
    order_by: str = "1"  # terms: the id of the metric to sort by ("_key" for alphabetical)
    interval: str = "auto"  # date_histogram: auto, or a fixed interval such as 1h
    filters: list[FilterSpec] = []
    precision: int = Field(default=3, ge=1, le=12)  # geohash_grid

    @model_validator(mode="after")
    def _fields(self) -> AggSpec:
        needs_field = self.type not in ("count", "filters")
        if needs_field and not self.field:
            raise ValueError(f"a {self.type} aggregation needs a field")
        if self.type == "filters" and not self.filters:
            raise ValueError("a filters aggregation needs filters")
        return self

    @property
    def is_metric(self) -> bool:
        return self.type in METRIC_AGGS


class VisSpec(Frozen):
    key: str = Field(pattern=KEY)
    title: str
    description: str
    index: str  # an index pattern key
    type: Literal["histogram", "line", "area", "horizontal_bar", "pie", "table", "metric", "tile_map",
                  "input_control_vis"]
    query: str = ""  # Lucene; narrows what the panel counts
    aggs: list[AggSpec] = []
    control_field: str | None = None  # input_control_vis: the field a person picks a value of

    @model_validator(mode="after")
    def _shape(self) -> VisSpec:
        if self.type == "input_control_vis":
            if not self.control_field or self.aggs:
                raise ValueError("an input_control_vis names control_field and has no aggs")
            return self
        metrics = [a for a in self.aggs if a.is_metric]
        if not metrics:
            raise ValueError("a visualization needs at least one metric aggregation")
        if self.aggs[: len(metrics)] != metrics:
            raise ValueError("list the metric aggregations first, then the buckets (outermost first)")
        return self

    @property
    def metrics(self) -> list[tuple[str, AggSpec]]:
        """(agg id, spec) of the metrics; ids are positions from 1, as the Dashboards editor numbers them."""
        return [(str(i), a) for i, a in enumerate(self.aggs, 1) if a.is_metric]

    @property
    def buckets(self) -> list[tuple[str, AggSpec]]:
        return [(str(i), a) for i, a in enumerate(self.aggs, 1) if not a.is_metric]

    @property
    def fields(self) -> set[str]:
        """Every field the panel aggregates on (what must exist and be aggregatable)."""
        found = {a.field for a in self.aggs if a.field}
        return found | ({self.control_field} if self.control_field else set())


class SearchSpec(Frozen):
    """A saved search: a Discover table (the timeline of the User investigation dashboard)."""

    key: str = Field(pattern=KEY)
    title: str
    description: str
    index: str
    query: str = ""
    columns: list[str] = Field(min_length=1)


class PanelSpec(Frozen):
    ref: str  # a visualization or search key
    w: int = Field(default=24, ge=1, le=48)
    h: int = Field(default=15, ge=1)


class DashboardSpec(Frozen):
    key: str = Field(pattern=KEY)
    title: str
    description: str
    time_from: str = "now-24h"
    query: str = ""
    panels: list[PanelSpec] = Field(min_length=1)


class Content(Frozen):
    index_patterns: list[IndexPatternSpec]
    visualizations: list[VisSpec]
    searches: list[SearchSpec] = []
    dashboards: list[DashboardSpec]

    @cached_property
    def patterns_by_key(self) -> dict[str, IndexPatternSpec]:
        return {p.key: p for p in self.index_patterns}

    @cached_property
    def vis_by_key(self) -> dict[str, VisSpec]:
        return {v.key: v for v in self.visualizations}

    @cached_property
    def searches_by_key(self) -> dict[str, SearchSpec]:
        return {s.key: s for s in self.searches}

    def dashboard(self, key: str) -> DashboardSpec:
        for dash in self.dashboards:
            if dash.key == key:
                return dash
        raise SavedObjectsError(f"no dashboard {key!r} in the Dashboards content")


FILES = {"index_patterns": "index-patterns.yaml", "visualizations": "visualizations.yaml",
         "searches": "searches.yaml", "dashboards": "dashboards.yaml"}


def load_content(folder: Path | None = None) -> Content:
    """Read and cross-check dashboards/*.yaml; every problem names its file and object."""
    folder = folder or content_path("dashboards")
    data: dict[str, object] = {}
    for key, name in FILES.items():
        path = folder / name
        if not path.exists():
            if key == "searches":
                continue
            raise SavedObjectsError(f"{path}: missing (the Dashboards content needs {', '.join(FILES.values())})")
        try:
            data[key] = (yaml.safe_load(path.read_text()) or {}).get(key, [])
        except yaml.YAMLError as exc:
            raise SavedObjectsError(f"{path}: invalid YAML: {exc}") from None
    try:
        content = Content.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = FILES.get(str(first["loc"][0]), "dashboards") if first["loc"] else "dashboards"
        loc = ".".join(str(p) for p in first["loc"])
        raise SavedObjectsError(f"{folder / where}: {loc}: {first['msg']}") from None
    problems = _cross_check(content)
    if problems:
        raise SavedObjectsError(f"{folder}: " + "; ".join(problems))
    return content


def _cross_check(content: Content) -> list[str]:
    problems: list[str] = []
    for kind, items in (("index pattern", content.index_patterns), ("visualization", content.visualizations),
                        ("search", content.searches), ("dashboard", content.dashboards)):
        keys = [i.key for i in items]
        problems += [f"{kind} {k!r} is defined twice" for k in sorted({k for k in keys if keys.count(k) > 1})]
    panels: list[VisSpec | SearchSpec] = [*content.visualizations, *content.searches]
    for item in panels:
        if item.index not in content.patterns_by_key:
            problems.append(f"{item.key}: unknown index pattern {item.index!r}")
    both = content.vis_by_key.keys() & content.searches_by_key.keys()
    problems += [f"{k!r} is both a visualization and a search" for k in sorted(both)]
    for dash in content.dashboards:
        for panel in dash.panels:
            if panel.ref not in content.vis_by_key and panel.ref not in content.searches_by_key:
                problems.append(f"dashboard {dash.key}: panel {panel.ref!r} is no visualization or search")
    return problems
