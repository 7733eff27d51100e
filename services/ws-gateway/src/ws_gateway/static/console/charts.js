// Rates and amounts, drawn with uPlot (vendored: /static/vendor/uplot/, the global `uPlot`).
//
// - Payment events per second over the last two minutes, from the payments feed (history
//   included): created, and the decisions (approved / review / declined), by event time.
// - Amount created per minute and currency over the last hour, from the `stats` snapshots.
// - Totals per currency and status, from the newest `stats` snapshot.
// Time axes are in the viewer's zone and say which.

import { byId, el, fill } from "./dom.js";
import { clockMinute, clockTime, money, number, zoneName } from "./format.js";

const WINDOW_S = 120;
const NOW_WINDOW_S = 10;
const DECISIONS = ["APPROVED", "REVIEW", "DECLINED"];
const COLOURS = ["#0969da", "#1a7f37", "#bf8700", "#cf222e", "#8250df", "#1b7c83", "#bc4c00", "#57606a"];

function plotWidth(container) {
  return Math.max(240, Math.floor(container.clientWidth || 600));
}

// A time axis in the viewer's zone and locale (uPlot's own labels are American: "10:25pm").
function timeAxis(format) {
  return {
    label: `time (${zoneName()})`,
    labelSize: 20,
    stroke: "#57606a",
    grid: { stroke: "#eaeef2" },
    values: (_u, ticks) => ticks.map((t) => format(t * 1000)),
  };
}

function valueAxis(label, format) {
  return {
    label,
    labelSize: 20,
    size: 64,
    stroke: "#57606a",
    grid: { stroke: "#eaeef2" },
    values: (_u, ticks) => ticks.map(format),
  };
}

// A uPlot chart that follows its container's width.
class Chart {
  constructor(container, height) {
    this.container = container;
    this.height = height;
    this.plot = null;
    new ResizeObserver(() => {
      if (this.plot) this.plot.setSize({ width: plotWidth(container), height });
    }).observe(container);
  }

  make(series, axes, data) {
    if (this.plot) this.plot.destroy();
    this.plot = new uPlot(
      {
        width: plotWidth(this.container),
        height: this.height,
        scales: { x: { time: true }, y: { range: (_u, _min, maxValue) => [0, Math.max(1, maxValue * 1.1)] } },
        axes,
        series: [{ label: "time", value: (_u, v) => (v === null || v === undefined ? "–" : clockTime(v * 1000)) }, ...series],
        legend: { show: true, live: true },
        cursor: { drag: { x: false, y: false } },
      },
      data,
      this.container,
    );
  }
}

export class RateChart {
  constructor() {
    this.chart = new Chart(byId("chart-rate"), 200);
    this.buckets = new Map(); // epoch second -> {created, APPROVED, REVIEW, DECLINED}
    const perSecond = (_u, v) => (v === null || v === undefined ? "–" : `${number(v)}/s`);
    this.chart.make(
      [
        { label: "created", stroke: COLOURS[0], width: 2, value: perSecond },
        { label: "approved", stroke: COLOURS[1], width: 1.5, value: perSecond },
        { label: "review", stroke: COLOURS[2], width: 1.5, value: perSecond },
        { label: "declined", stroke: COLOURS[3], width: 1.5, value: perSecond },
      ],
      [timeAxis(clockTime), valueAxis("events per second", (v) => number(v, 1))],
      this.data(Math.floor(Date.now() / 1000)),
    );
  }

  add(event) {
    const d = event.data || {};
    let kind = null;
    if (event.type === "pulse.payment.created") kind = "created";
    else if (event.type === "pulse.payment.updated" && d.status !== d.old_status && DECISIONS.includes(d.status)) {
      kind = d.status;
    }
    const at = Date.parse(event.time);
    if (!kind || !at) return;
    const second = Math.floor(at / 1000);
    let bucket = this.buckets.get(second);
    if (!bucket) {
      bucket = { created: 0, APPROVED: 0, REVIEW: 0, DECLINED: 0 };
      this.buckets.set(second, bucket);
    }
    bucket[kind] += 1;
  }

  data(end) {
    const xs = [];
    const columns = [[], [], [], []];
    for (let t = end - WINDOW_S + 1; t <= end; t += 1) {
      const b = this.buckets.get(t);
      xs.push(t);
      columns[0].push(b ? b.created : 0);
      DECISIONS.forEach((status, i) => columns[i + 1].push(b ? b[status] : 0));
    }
    return [xs, ...columns];
  }

  // Once a second: the window up to the last whole second, and the "now" figure.
  draw() {
    const end = Math.floor(Date.now() / 1000) - 1;
    for (const second of this.buckets.keys()) if (second <= end - WINDOW_S) this.buckets.delete(second);
    const data = this.data(end);
    this.chart.plot.setData(data);
    const recent = data[1].slice(-NOW_WINDOW_S);
    byId("rate-now").textContent = number(recent.reduce((a, b) => a + b, 0) / NOW_WINDOW_S, 1);
  }
}

export class AmountChart {
  constructor() {
    this.chart = new Chart(byId("chart-amounts"), 200);
    this.currencies = "";
    this.latest = null;
  }

  set(stats) {
    this.latest = stats;
  }

  draw() {
    const stats = this.latest;
    if (!stats) return;
    this.latest = null;
    const series = stats.series || [];
    const currencies = [...new Set(series.flatMap((m) => Object.keys(m.created || {})))].sort();
    const xs = series.map((m) => Date.parse(m.minute.replace(/Z$/, ":00Z")) / 1000);
    const columns = currencies.map((c) => series.map((m) => Number((m.created || {})[c]?.amount || 0)));
    const perMinute = series.map((m) => (m.events || 0) / 60);
    byId("rate-minute").textContent = perMinute.length ? number(perMinute[perMinute.length - 1], 1) : "–";
    if (currencies.join() !== this.currencies || !this.chart.plot) {
      this.currencies = currencies.join();
      this.chart.make(
        currencies.map((c, i) => ({
          label: c,
          stroke: COLOURS[i % COLOURS.length],
          width: 2,
          value: (_u, v) => (v === null || v === undefined ? "–" : money(v, c)),
        })),
        [timeAxis(clockMinute), valueAxis("amount per minute", (v) => number(v))],
        [xs, ...columns],
      );
    } else {
      this.chart.plot.setData([xs, ...columns]);
    }
    byId("amounts-empty").hidden = currencies.length > 0;
    this.chart.container.hidden = currencies.length === 0;
  }
}

const TOTAL_STATUSES = ["APPROVED", "REVIEW", "DECLINED", "PENDING"];

// The newest totals per currency: created, and what each status holds now.
export function drawTotals(stats) {
  const created = stats.created || {};
  const byStatus = stats.by_status || {};
  const currencies = new Set(Object.keys(created));
  for (const per of Object.values(byStatus)) for (const c of Object.keys(per)) currencies.add(c);
  fill(
    byId("totals"),
    [...currencies].sort().map((c) =>
      el(
        "tr",
        { testid: "totals-row", dataset: { currency: c } },
        el("th", { scope: "row" }, c),
        el("td", { class: "num" }, number(created[c]?.count || 0)),
        el("td", { class: "num" }, money(created[c]?.amount || 0, c)),
        TOTAL_STATUSES.map((s) => {
          const m = (byStatus[s] || {})[c];
          return el("td", { class: `num ${s}`, title: m ? money(m.amount, c) : "" }, number(m ? m.count : 0));
        }),
      ),
    ),
  );
  const events = stats.events || {};
  byId("events-total").textContent = number((events.created || 0) + (events.updated || 0) + (events.deleted || 0));
}
