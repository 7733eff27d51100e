// Pipeline health, as the pipeline measures it: the `health` channel's `pulse.health` events
// (docs/design.md, "Health"), the latest one per reporting process (`source`).
//
// A source silent for three of its intervals is dropped. Across sources: a shard's lag and a
// queue's depth and ages are the largest reported (several processes may measure the same
// shard or queue), throughput is summed per service, connections are summed, end-to-end
// latency takes the largest p50 and p99 of the gateways.

import { byId, fill, row } from "./dom.js";
import { duration, number, zonedTime } from "./format.js";

const STALE_INTERVALS = 3;
const DEAD_LETTER_ROLES = new Set(["dlq", "failures"]);

function max(a, b) {
  if (a === null || a === undefined) return b ?? null;
  if (b === null || b === undefined) return a;
  return Math.max(a, b);
}

function measuredAt(event) {
  const data = event.data || {};
  return Date.parse(data.measured_at || event.time || "") || 0;
}

function isFresh(event, now) {
  const interval = Number((event.data || {}).interval_seconds) || 5;
  return now - measuredAt(event) <= STALE_INTERVALS * interval * 1000;
}

// The panels' figures from the latest event of each live source. Pure.
export function summarize(events, now) {
  const shards = new Map();
  const queues = new Map();
  const services = new Map();
  const e2e = { p50: null, p99: null, samples: 0, reporting: false };
  let connections = null;
  const sources = [];
  for (const event of events) {
    if (!isFresh(event, now)) continue;
    const d = event.data || {};
    sources.push({ source: event.source, service: d.service, measuredAt: measuredAt(event) });
    for (const s of d.shards || []) {
      const seen = shards.get(s.shard_id);
      shards.set(s.shard_id, {
        shard_id: s.shard_id,
        iterator_age_ms: max(seen?.iterator_age_ms, s.iterator_age_ms),
        records_per_s: max(seen?.records_per_s, s.records_per_s),
      });
    }
    for (const q of d.queues || []) {
      const seen = queues.get(q.name);
      queues.set(q.name, {
        name: q.name,
        role: q.role,
        depth: max(seen?.depth, q.depth),
        in_flight: max(seen?.in_flight, q.in_flight),
        oldest_age_s: max(seen?.oldest_age_s, q.oldest_age_s),
      });
    }
    if (d.throughput) {
      const seen = services.get(d.service) || { service: d.service, instances: 0, messages_per_s: 0, failures_per_s: 0 };
      seen.instances += 1;
      seen.messages_per_s += Number(d.throughput.messages_per_s) || 0;
      seen.failures_per_s += Number(d.throughput.failures_per_s) || 0;
      services.set(d.service, seen);
    }
    if (d.e2e_ms) {
      e2e.reporting = true;
      e2e.p50 = max(e2e.p50, d.e2e_ms.p50);
      e2e.p99 = max(e2e.p99, d.e2e_ms.p99);
      e2e.samples += Number(d.e2e_ms.samples) || 0;
    }
    if (d.connections !== undefined) connections = (connections || 0) + Number(d.connections);
  }
  const byName = (a, b) => String(a.name ?? a.shard_id ?? a.service).localeCompare(String(b.name ?? b.shard_id ?? b.service));
  const allQueues = [...queues.values()].sort(byName);
  const work = allQueues.filter((q) => !DEAD_LETTER_ROLES.has(q.role));
  const dead = allQueues.filter((q) => DEAD_LETTER_ROLES.has(q.role));
  const sum = (list, key) => (list.length ? list.reduce((n, q) => n + (Number(q[key]) || 0), 0) : null);
  const shardList = [...shards.values()].sort(byName);
  return {
    sources,
    shards: shardList,
    maxLagMs: shardList.reduce((m, s) => max(m, s.iterator_age_ms), null),
    queues: work,
    queueDepth: sum(work, "depth"),
    oldestAgeS: work.reduce((m, q) => max(m, q.oldest_age_s), null),
    deadLetters: dead,
    deadLetterDepth: sum(dead, "depth"),
    throughput: [...services.values()].sort(byName),
    e2e,
    connections,
  };
}

// The panels: keeps the latest event per source, redraws on news and once a second (so a
// silent source drops out even when nothing arrives).
export class HealthBoard {
  constructor() {
    this.latest = new Map(); // source -> event
    this.dirty = true;
    this.timer = setInterval(() => this.render(), 1000);
  }

  add(event) {
    const seen = this.latest.get(event.source);
    if (seen && measuredAt(seen) > measuredAt(event)) return;
    this.latest.set(event.source, event);
    this.dirty = true;
  }

  refused(message) {
    byId("health-note").textContent = message;
  }

  render() {
    const now = Date.now();
    for (const [source, event] of this.latest) {
      if (!isFresh(event, now)) {
        this.latest.delete(source);
        this.dirty = true;
      }
    }
    if (!this.dirty) return;
    this.dirty = false;
    const h = summarize(this.latest.values(), now);
    const newest = h.sources.reduce((m, s) => Math.max(m, s.measuredAt), 0);
    byId("health-sources").textContent = h.sources.length
      ? `${h.sources.length} reporting · last ${zonedTime(newest)}`
      : "no process is reporting";

    byId("health-stream-lag").textContent = number(h.maxLagMs);
    fill(
      byId("health-shards"),
      h.shards.map((s) =>
        row([["name", s.shard_id], ["num", `${number(s.iterator_age_ms)} ms`], ["num", `${number(s.records_per_s, 1)}/s`]], {
          testid: "health-shard-row",
          dataset: { shard: s.shard_id },
        }),
      ),
    );

    byId("health-queue-depth").textContent = number(h.queueDepth);
    byId("health-queue-oldest").textContent = duration(h.oldestAgeS);
    fill(byId("health-queues"), h.queues.map((q) => queueRow(q, "health-queue-row")));

    byId("health-dlq-depth").textContent = number(h.deadLetterDepth);
    byId("health-dlq-card").dataset.alarm = h.deadLetterDepth > 0 ? "yes" : "no";
    fill(byId("health-dlqs"), h.deadLetters.map((q) => queueRow(q, "health-dlq-row")));

    fill(
      byId("health-throughput"),
      h.throughput.map((t) =>
        row(
          [
            ["name", t.instances > 1 ? `${t.service} (${t.instances} processes)` : t.service],
            ["num", `${number(t.messages_per_s, 1)}/s`],
            ["num", t.failures_per_s ? `${number(t.failures_per_s, 1)} failed/s` : ""],
          ],
          { testid: "health-throughput-row", dataset: { service: t.service } },
        ),
      ),
    );

    byId("health-e2e-p99").textContent = number(h.e2e.p99);
    byId("health-e2e-p50").textContent = number(h.e2e.p50);
    byId("health-e2e-samples").textContent = h.e2e.reporting ? `${number(h.e2e.samples)} events in the last minute` : "";
    byId("health-connections").textContent = number(h.connections);
  }
}

function queueRow(q, testid) {
  return row(
    [
      ["name", q.name],
      ["num", number(q.depth)],
      ["num", q.in_flight ? `${number(q.in_flight)} in flight` : ""],
      ["num", q.oldest_age_s === null || q.oldest_age_s === undefined ? "" : `oldest ${duration(q.oldest_age_s)}`],
    ],
    { testid, dataset: { queue: q.name } },
  );
}
