// Pulse browser client: one WebSocket to the ws-gateway, channels that resume where they
// left off. Copy this file as it is; it has no dependencies.
//
//   import { PulseClient } from "/static/pulse-client.js";
//   const pulse = new PulseClient({ url: "wss://host/ws", token: async () => fetchToken() });
//   pulse.subscribe("payments", (event, frame) => console.log(event.type, frame.offset));
//   pulse.addEventListener("state", (e) => console.log(e.detail.state));
//   pulse.start();
//
// States: "connecting" (first attempt), "live", "reconnecting" (after a drop, with
// exponential backoff and full jitter), "recovered" (back, and every channel resumed from
// its last offset with nothing missed; becomes "live" shortly after). A channel whose
// history no longer reaches back fires a "gap" event: refetch what you show from it.
// Close code 4003 (forbidden) stops the client: it will not reconnect.

export class PulseClient extends EventTarget {
  constructor({
    url,
    token,
    backoffMinMs = 500,
    backoffMaxMs = 10000,
    pingIntervalMs = 20000,
    refreshLeadMs = 30000,
  }) {
    super();
    this.url = url;
    this.token = token; // a string, or an async function returning a fresh token
    this.backoffMinMs = backoffMinMs;
    this.backoffMaxMs = backoffMaxMs;
    this.pingIntervalMs = pingIntervalMs;
    this.refreshLeadMs = refreshLeadMs;
    this.handlers = new Map(); // channel -> [handler]
    this.positions = new Map(); // channel -> {offset, epoch}
    this.state = "idle";
    this.ws = null;
    this.attempt = 0;
    this.everConnected = false;
    this.stopped = true;
    this.timers = {};
  }

  subscribe(channel, handler) {
    if (!this.handlers.has(channel)) {
      this.handlers.set(channel, []);
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.sendSubscribe(channel);
    }
    this.handlers.get(channel).push(handler);
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.clearTimers();
    if (this.ws) this.ws.close(1000, "bye");
  }

  // -- internals ----------------------------------------------------------------------

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state } }));
  }

  async currentToken() {
    return typeof this.token === "function" ? await this.token() : this.token;
  }

  async connect() {
    this.setState(this.everConnected ? "reconnecting" : "connecting");
    let token;
    try {
      token = await this.currentToken();
    } catch (err) {
      this.retry();
      return;
    }
    const sep = this.url.includes("?") ? "&" : "?";
    const ws = new WebSocket(`${this.url}${sep}token=${encodeURIComponent(token)}`);
    this.ws = ws;
    this.pending = new Set(this.handlers.keys());
    this.allRecovered = true;
    ws.onopen = () => {
      for (const channel of this.handlers.keys()) this.sendSubscribe(channel);
      this.timers.ping = setInterval(() => this.ping(), this.pingIntervalMs);
      this.scheduleRefresh(token);
    };
    ws.onmessage = (msg) => this.onFrame(JSON.parse(msg.data));
    ws.onclose = (e) => this.onClose(e);
  }

  sendSubscribe(channel) {
    const frame = { op: "subscribe", channel };
    const position = this.positions.get(channel);
    if (position) {
      frame.since = position.offset;
      frame.epoch = position.epoch;
    }
    this.ws.send(JSON.stringify(frame));
  }

  onFrame(frame) {
    switch (frame.op) {
      case "event": {
        const position = this.positions.get(frame.channel);
        if (position) position.offset = frame.offset;
        for (const handler of this.handlers.get(frame.channel) || []) handler(frame.event, frame);
        break;
      }
      case "subscribed":
        this.onSubscribed(frame);
        break;
      case "pong":
        clearTimeout(this.timers.pong);
        break;
      case "error":
        this.dispatchEvent(new CustomEvent("error", { detail: frame }));
        break;
      default:
        this.dispatchEvent(new CustomEvent(frame.op, { detail: frame }));
    }
  }

  onSubscribed(frame) {
    const position = this.positions.get(frame.channel);
    const resumed = position && frame.recovered && position.epoch === frame.epoch;
    if (position && !resumed) {
      this.allRecovered = false;
      this.dispatchEvent(new CustomEvent("gap", { detail: frame }));
    }
    if (!resumed) this.positions.set(frame.channel, { offset: frame.offset, epoch: frame.epoch });
    if (this.pending) this.pending.delete(frame.channel);
    if (this.pending && this.pending.size === 0) {
      this.pending = null;
      this.attempt = 0;
      if (this.everConnected && this.allRecovered) {
        this.setState("recovered");
        this.timers.live = setTimeout(() => this.setState("live"), 3000);
      } else {
        this.setState("live");
      }
      this.everConnected = true;
    }
  }

  ping() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send('{"op":"ping"}');
    clearTimeout(this.timers.pong);
    this.timers.pong = setTimeout(() => this.ws && this.ws.close(4000, "no pong"), 10000);
  }

  // With a token function, the connection's token is swapped in band ({"op":"refresh"})
  // before it expires: refreshLeadMs before, or a fifth of its lifetime before for tokens
  // shorter-lived than that. The connection and its channels stay as they are.
  scheduleRefresh(token) {
    if (typeof this.token !== "function") return;
    const claims = tokenClaims(token);
    if (!claims || !claims.exp) return;
    const now = Date.now() / 1000;
    const lifetime = claims.exp - (claims.iat || now);
    const lead = Math.min(this.refreshLeadMs / 1000, lifetime / 5);
    const inMs = Math.max((claims.exp - now - lead) * 1000, 1000);
    clearTimeout(this.timers.refresh);
    this.timers.refresh = setTimeout(async () => {
      try {
        const fresh = await this.token();
        if (this.ws && this.ws.readyState === WebSocket.OPEN) {
          this.ws.send(JSON.stringify({ op: "refresh", token: fresh }));
          this.scheduleRefresh(fresh);
        }
      } catch (err) {
        this.scheduleRefresh(token);
      }
    }, inMs);
  }

  clearTimers() {
    for (const id of Object.values(this.timers)) {
      clearTimeout(id);
      clearInterval(id);
    }
    this.timers = {};
  }

  onClose(event) {
    this.clearTimers();
    this.ws = null;
    if (this.stopped) {
      this.setState("idle");
      return;
    }
    if (event.code === 4003) {
      this.stopped = true;
      this.setState("forbidden");
      return;
    }
    this.retry();
  }

  retry() {
    this.setState(this.everConnected ? "reconnecting" : "connecting");
    // Full jitter, as Pulse's services back off: a wait drawn from the whole window, which
    // doubles per attempt up to the cap, so clients dropped together do not return together.
    const cap = Math.min(this.backoffMaxMs, this.backoffMinMs * 2 ** this.attempt);
    this.attempt += 1;
    const delay = Math.random() * cap;
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }
}

function tokenClaims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload));
  } catch (err) {
    return null;
  }
}
