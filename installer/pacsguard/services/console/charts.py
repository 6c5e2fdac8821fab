"""The overview charts of the console: the Dashboards visualizations, run and drawn with plotly.

The console shows the panels of the "PACS security overview" dashboard from
their specs in dashboards/visualizations.yaml: the same search (savedobjects/
search.py) and the same kind of chart, so the console and Dashboards agree.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from typing import Any

import plotly.graph_objects as go

from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.savedobjects.search import Row, run_visualization
from pacsguard.savedobjects.spec import Content, VisSpec

OVERVIEW = "overview"


def _series(vis: VisSpec, rows: list[Row]) -> dict[str, tuple[list[Any], list[Any]]]:
    """{series name: (x values, y values)}; the series is the group bucket where there is one."""
    metric_id = vis.metrics[0][0]
    out: dict[str, tuple[list[Any], list[Any]]] = defaultdict(lambda: ([], []))
    for row in rows:
        x = row.keys[0] if row.keys else ""
        name = str(row.keys[1]) if len(row.keys) > 1 else (vis.metrics[0][1].label or "")
        out[name][0].append(x)
        out[name][1].append(row.values.get(metric_id) or 0)
    return dict(out)


def figure(vis: VisSpec, rows: list[Row]) -> go.Figure:
    # The title sits under the plot toolbar (which plotly draws at the top right of the chart), not
    # beside it; the axes grow their margins to fit their labels (a time axis adds the date under the
    # first time) and the legend goes below them, at the foot of the chart.
    layout = {"title": {"text": vis.title, "font": {"size": 14}, "x": 0.02, "xanchor": "left",
                        "yref": "container", "y": 1, "yanchor": "top", "pad": {"t": 32}},
              "margin": {"l": 40, "r": 10, "t": 64, "b": 40}, "height": 340,
              "xaxis": {"automargin": True}, "yaxis": {"automargin": True},
              "legend": {"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom"}}
    if vis.type == "metric":
        value = rows[0].values.get(vis.metrics[0][0]) if rows else 0
        return go.Figure(go.Indicator(mode="number", value=value or 0, title={"text": vis.metrics[0][1].label}),
                         layout=layout)
    if vis.type == "pie":
        series = _series(vis, rows)
        labels, values = next(iter(series.values()), ([], []))
        return go.Figure(go.Pie(labels=[str(v) for v in labels], values=values, hole=0.4), layout=layout)
    if vis.type == "table":
        headers = [a.label or a.field or a.type for _, a in vis.buckets] + [a.label or a.type for _, a in vis.metrics]
        columns: list[list[Any]] = [[str(r.keys[i]) for r in rows] for i in range(len(vis.buckets))]
        columns += [[r.values.get(i) for r in rows] for i, _ in vis.metrics]
        return go.Figure(go.Table(header={"values": headers}, cells={"values": columns}), layout=layout)
    horizontal = vis.type == "horizontal_bar"
    traces = []
    for name, (xs, ys) in _series(vis, rows).items():
        if vis.type == "line":
            traces.append(go.Scatter(x=xs, y=ys, name=name, mode="lines+markers"))
        elif horizontal:
            traces.append(go.Bar(y=[str(x) for x in xs], x=ys, name=name, orientation="h"))
        else:
            traces.append(go.Bar(x=xs, y=ys, name=name))
    fig = go.Figure(traces, layout=layout)
    fig.update_layout(barmode="stack")
    if horizontal:
        fig.update_yaxes(autorange="reversed", automargin=True)
    return fig


def overview_charts(cluster: Cluster, settings: Settings, content: Content, hours: int = 24,
                    now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """[{key, title, points, figure (plotly JSON)}] for every overview panel the console can draw."""
    end = now or dt.datetime.now(dt.timezone.utc)
    start = end - dt.timedelta(hours=hours)
    out = []
    for panel in content.dashboard(OVERVIEW).panels:
        vis = content.vis_by_key.get(panel.ref)
        if vis is None or vis.type in ("input_control_vis", "tile_map"):
            continue
        rows = run_visualization(cluster, settings, content, vis, start, end)
        out.append({"key": vis.key, "title": vis.title, "points": len(rows), "wide": panel.w >= 36,
                    "figure": json.loads(figure(vis, rows).to_json())})
    return out
