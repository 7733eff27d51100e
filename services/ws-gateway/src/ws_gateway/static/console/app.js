// The operator's console (GET / on the gateway): one PulseClient over the payments, alerts,
// stats and health channels, each opened from its history and then followed live; the
// panels, charts, feed and review desk draw what it hands them.

import { PulseClient, tokenClaims } from "/static/pulse-client.js";
import {
  askForToken,
  describeToken,
  hideTokenPanel,
  initialToken,
  showState,
  showTransport,
} from "./auth.js";
import { AmountChart, RateChart, drawTotals } from "./charts.js";
import { byId } from "./dom.js";
import { AlertList, PaymentFeed } from "./feed.js";
import { loadReasonWords, zoneName } from "./format.js";
import { HealthBoard } from "./health.js";
import { ReviewDesk } from "./review.js";

// How many stored events each channel opens with.
const HISTORY = { payments: 200, alerts: 50, stats: 1, health: 50 };
const OPS_CHANNELS = new Set(["payments", "alerts"]);
const ASK = "Paste an operator's token (pulse token --sub me --roles ops).";

// Event ids already handed on, per channel: nothing is drawn twice, whatever overlaps.
class SeenEvents {
  constructor(limit) {
    this.limit = limit;
    this.ids = new Set();
  }

  // True the first time ``key`` is offered.
  first(key) {
    if (this.ids.has(key)) return false;
    this.ids.add(key);
    if (this.ids.size > this.limit) this.ids.delete(this.ids.values().next().value);
    return true;
  }
}

async function loadConfig() {
  try {
    const response = await fetch("/console/config.json");
    return response.ok ? await response.json() : {};
  } catch (err) {
    return {};
  }
}

async function main() {
  const [config] = await Promise.all([loadConfig(), loadReasonWords()]);
  for (const label of document.querySelectorAll(".zone")) label.textContent = zoneName();

  const feed = new PaymentFeed();
  const alerts = new AlertList();
  const health = new HealthBoard();
  const rate = new RateChart();
  const amounts = new AmountChart();
  const desk = new ReviewDesk(config.ingest_url || "");
  const seen = new SeenEvents(20000);

  // Drawn once per frame (or every half second while the tab is hidden and frames stop).
  let drawQueued = false;
  const draw = () => {
    drawQueued = false;
    feed.flush();
    alerts.flush();
    desk.flush();
    health.render();
  };
  const queueDraw = () => {
    if (drawQueued) return;
    drawQueued = true;
    if (document.hidden) setTimeout(draw, 500);
    else requestAnimationFrame(draw);
  };
  const drawCharts = () => {
    rate.draw();
    amounts.draw();
  };
  setInterval(drawCharts, 1000);

  const take = {
    payments: (event) => {
      feed.add(event);
      rate.add(event);
      desk.onPayment(event);
    },
    alerts: (event) => alerts.add(event),
    stats: (event) => {
      drawTotals(event.data || {});
      amounts.set(event.data || {});
    },
    health: (event) => health.add(event),
  };

  let client = null;
  let notOps = false;

  const useToken = (token) => {
    const claims = tokenClaims(token);
    describeToken(claims);
    notOps = false;
    desk.setToken(token, claims);
    if (client) {
      client.setToken(token);
      return;
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    client = new PulseClient({ url: `${scheme}://${location.host}/ws`, token, backoffMaxMs: 5000 });
    window.pulse = client; // for the browser's console (and the browser tests)
    showTransport(client.transport);
    client.addEventListener("transport", (e) => showTransport(e.detail.transport));
    client.addEventListener("state", (e) => {
      const { state } = e.detail;
      if (notOps && (state === "live" || state === "recovered")) return; // still not an ops token
      showState(state, e.detail);
      if (state === "rejected") {
        askForToken(`The gateway refused this token: ${e.detail.message}. ${ASK}`, useToken);
      } else if (state === "forbidden") {
        askForToken(`The gateway closed the connection: ${e.detail.message}. ${ASK}`, useToken);
      } else if (state === "live") {
        hideTokenPanel();
        drawCharts(); // the history is in: no need to wait for the next tick
      }
    });
    client.addEventListener("refused", (e) => {
      const { channel, code, message } = e.detail;
      if (OPS_CHANNELS.has(channel) && code === "forbidden" && !notOps) {
        notOps = true;
        const sub = tokenClaims(client.token)?.sub || "?";
        showState("forbidden", { reason: "not an ops token", message });
        askForToken(`This token (${sub}) may not read payments and alerts: the console needs the ops role. ${ASK}`, useToken);
      } else if (channel === "health") {
        health.refused(`No health data: the gateway refused the health channel (${message}).`);
      }
    });
    client.addEventListener("gap", () => {
      byId("gap").hidden = false;
      desk.load();
    });
    for (const [channel, handle] of Object.entries(take)) {
      client.subscribe(
        channel,
        (event) => {
          if (!seen.first(`${channel} ${event.id}`)) return;
          handle(event);
          queueDraw();
        },
        { history: HISTORY[channel] },
      );
    }
    client.start();
  };

  byId("change-token").addEventListener("click", () => askForToken(ASK, useToken));
  const token = initialToken();
  if (token) {
    useToken(token);
  } else {
    showState("no-token", { message: "no token given" });
    desk.setToken(null, null);
    askForToken(`No token yet. ${ASK}`, useToken);
  }
}

main();
