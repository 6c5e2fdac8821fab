// pacsguard console: loads alerts and charts from the console's own API (same origin only).
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

async function transition(id, action) {
  const noteInput = document.getElementById("note");
  const res = await fetch(`/api/alerts/${encodeURIComponent(id)}/${action}`, {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify({by: "console", note: noteInput ? noteInput.value : ""}),
    credentials: "same-origin",
  });
  const body = await res.json();
  if (!body.ok) { alert(body.error); return null; }
  return body.alert;
}

function actionButton(alertRow, label, action) {
  const b = document.createElement("button");
  b.className = "act";
  b.textContent = label;
  b.dataset.action = action;
  b.dataset.id = alertRow.id;
  b.addEventListener("click", async () => {
    b.disabled = true;
    const done = await transition(alertRow.id, action);
    if (done) await loadAlerts();
    b.disabled = false;
  });
  return b;
}

async function loadAlerts() {
  const table = document.getElementById("alerts");
  if (!table) return;
  const status = document.getElementById("alerts-status");
  const res = await fetch("/api/alerts", {credentials: "same-origin"});
  const body = await res.json();
  const tbody = table.querySelector("tbody");
  tbody.replaceChildren();
  for (const a of body.alerts) {
    const row = document.createElement("tr");
    row.dataset.alertId = a.id;
    cell(row, a.start_time);
    cell(row, a.status, `status status-${a.status}`);
    cell(row, a.condition, `condition condition-${a.condition}`);
    cell(row, a.severity, `sev-${a.severity}`);
    cell(row, a.signal);
    const ruleCell = cell(row, "");
    const link = document.createElement("a");
    link.href = `/alerts/${encodeURIComponent(a.id)}`;
    link.textContent = a.rule;
    ruleCell.appendChild(link);
    cell(row, a.entity);
    cell(row, a.owner);
    const actions = cell(row, "");
    if (a.status === "open") actions.appendChild(actionButton(a, "Acknowledge", "ack"));
    actions.appendChild(actionButton(a, "Close", "close"));
    tbody.appendChild(row);
  }
  status.textContent = `${body.alerts.length} alert(s) in the queue (open or acknowledged, active or cleared)`;
}

async function loadCharts() {
  const box = document.getElementById("charts");
  if (!box) return;
  const hours = document.getElementById("hours").value;
  const res = await fetch(`/api/charts?hours=${hours}`, {credentials: "same-origin"});
  const body = await res.json();
  box.replaceChildren();
  let points = 0;
  for (const chart of body.charts) {
    const div = document.createElement("div");
    div.className = chart.wide ? "chart wide" : "chart";
    div.id = `chart-${chart.key}`;
    div.dataset.points = chart.points;
    box.appendChild(div);
    points += chart.points;
    // size to the grid cell the chart sits in (plotly's own default is a fixed 700px)
    const layout = Object.assign({}, chart.figure.layout, {autosize: true, width: div.clientWidth});
    await Plotly.newPlot(div, chart.figure.data, layout, {displaylogo: false, responsive: true});
  }
  document.body.dataset.charts = "rendered";
  document.body.dataset.chartPoints = String(points);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("button.act[data-id]")) {
    b.addEventListener("click", async () => {
      const done = await transition(b.dataset.id, b.dataset.action);
      if (done) {
        document.getElementById("alert-status").textContent = done.status;
        document.getElementById("alert-condition").textContent = done.condition;
      }
    });
  }
  const hours = document.getElementById("hours");
  if (hours) hours.addEventListener("change", loadCharts);
  loadAlerts().then(() => { document.body.dataset.alerts = "loaded"; });
  loadCharts();
});
