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
//
// Opening full: subscribe(channel, handler, { history: 100 }) hands the handler the newest
// 100 stored events first (GET /v1/channels/{c}/history; their frames carry history: true),
// then subscribes from the last of them with since + epoch, so live events follow with no
// gap and no duplicate.
//
// Refused credentials: a browser cannot see why a WebSocket handshake failed, so when one
// fails before opening the client asks the gateway's HTTP side with the same token. A
// missing, invalid or expired token makes the state "rejected", with detail.reason
// ("missing" / "invalid" / "expired") and detail.message (the gateway's words); with a fixed
// token the client then waits for setToken(newToken). A channel the token may not read
// fires "refused" ({channel, code, message}) and the others go live without it, over
// either transport (an SSE stream is opened again without it).
//
// Networks that block WebSockets: the client starts on a WebSocket, and when its upgrade
// fails while the gateway's HTTP side answers, or it opens but no frame arrives within
// fallbackAfterMs (3 s), it switches to Server-Sent Events (GET /sse) with the same
// channels, each resumed from the offset and epoch it holds (Last-Event-ID cursor), so
// nothing is missed or seen twice. On SSE it tries a WebSocket again after wsRetryMinMs
// (30 s, doubling up to wsRetryMaxMs) and switches back, resuming again, once one answers.
// client.transport is "websocket" or "sse"; a "transport" event ({transport}) tells a change.
// fallback: false keeps it on WebSockets.

export class PulseClient extends EventTarget {
  constructor({
    url,
    token,
    backoffMinMs = 500,
    backoffMaxMs = 10000,
    pingIntervalMs = 20000,
    refreshLeadMs = 30000,
    httpUrl = null,
    fallback = true,
    fallbackAfterMs = 3000,
    wsRetryMinMs = 30000,
    wsRetryMaxMs = 300000,
  }) {
    super();
    this.url = url;
    this.token = token; // a string, or an async function returning a fresh token
    this.backoffMinMs = backoffMinMs;
    this.backoffMaxMs = backoffMaxMs;
    this.pingIntervalMs = pingIntervalMs;
    this.refreshLeadMs = refreshLeadMs;
    // The gateway's HTTP side (history, the credential check): by default the WebSocket
    // URL's origin and path without its last "/ws".
    this.httpUrl = httpUrl || httpBase(url);
    this.fallback = fallback;
    this.fallbackAfterMs = fallbackAfterMs;
    this.wsRetryMinMs = wsRetryMinMs;
    this.wsRetryMaxMs = wsRetryMaxMs;
    this.transport = "websocket";
    this.es = null; // the EventSource while on SSE
    this.probes = 0; // WebSocket attempts made while on SSE (their backoff)
    this.probeTimer = null;
    this.handlers = new Map(); // channel -> [handler]
    this.historyWanted = new Map(); // channel -> how many stored events to start with
    this.positions = new Map(); // channel -> {offset, epoch}
    this.refusedChannels = new Set(); // refused to the current token: left out of SSE streams
    this.state = "idle";
    this.stateDetail = {};
    this.ws = null;
    this.attempt = 0;
    this.everConnected = false;
    this.stopped = true;
    this.timers = {};
  }

  subscribe(channel, handler, { history = 0 } = {}) {
    if (history > 0 && !this.positions.has(channel)) this.historyWanted.set(channel, history);
    if (!this.handlers.has(channel)) {
      this.handlers.set(channel, []);
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.sendSubscribe(channel);
      if (this.es) this.reopen(); // an SSE stream names its channels: open it again with it
    }
    this.handlers.get(channel).push(handler);
  }

  start() {
    this.stopped = false;
    if (this.transport === "sse") this.scheduleProbe(); // stopped while on SSE
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.clearTimers();
    clearTimeout(this.probeTimer);
    if (this.ws) this.ws.close(1000, "bye");
    if (this.es) {
      this.closeSse();
      this.setState("idle");
    }
  }

  // Use another token from now on (a string or a function): after a rejection the client
  // starts again; on an open connection it reconnects with it, resuming every channel.
  setToken(token) {
    this.token = token;
    this.attempt = 0;
    this.refusedChannels.clear(); // another token may read them
    if (this.ws) {
      this.ws.close(1000, "new token"); // onClose reconnects
    } else if (this.es) {
      this.reopen();
    } else if (this.stopped) {
      this.start();
    } else {
      this.clearTimers();
      this.connect();
    }
  }

  // -- internals ----------------------------------------------------------------------

  setState(state, detail = {}) {
    if (state === this.state && detail.reason === this.stateDetail.reason) return;
    this.state = state;
    this.stateDetail = detail;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...detail } }));
  }

  async currentToken() {
    return typeof this.token === "function" ? await this.token() : this.token;
  }

  // ``quiet``: a switch of transport, not a reconnection (the state stays as it is).
  async connect({ quiet = false } = {}) {
    if (!quiet) this.setState(this.everConnected ? "reconnecting" : "connecting");
    this.switching = quiet && this.state === "live"; // stays live through it (see settle)
    const attempt = (this.connects = (this.connects || 0) + 1); // a newer connect() wins
    let token;
    try {
      token = await this.currentToken();
    } catch (err) {
      this.retry();
      return;
    }
    if (this.historyWanted.size && !(await this.loadHistory(token))) return;
    if (this.stopped || attempt !== this.connects) return;
    this.pending = new Set(this.streamedChannels());
    this.allRecovered = true;
    if (this.transport === "sse") this.openSse(token);
    else this.openWebSocket(token);
  }

  wsUrl(token) {
    const sep = this.url.includes("?") ? "&" : "?";
    return `${this.url}${sep}token=${encodeURIComponent(token)}`;
  }

  openWebSocket(token) {
    const ws = new WebSocket(this.wsUrl(token));
    this.ws = ws;
    ws.onopen = () => {
      ws.opened = true;
      for (const channel of this.handlers.keys()) this.sendSubscribe(channel);
      this.timers.ping = setInterval(() => this.ping(), this.pingIntervalMs);
      this.scheduleRefresh(token);
    };
    ws.onmessage = (msg) => {
      if (!ws.framed) clearTimeout(this.timers.firstFrame);
      ws.framed = true;
      this.onFrame(JSON.parse(msg.data));
    };
    ws.onclose = (e) => {
      if (!ws.abandoned) this.onClose(e, ws.opened ? null : token);
    };
    // A socket that opens (or hangs) but carries nothing: something on the way holds it.
    if (this.fallback && this.handlers.size) {
      this.timers.firstFrame = setTimeout(() => this.fallBack(ws), this.fallbackAfterMs);
    }
  }

  // -- the SSE fallback ---------------------------------------------------------------

  // The WebSocket ``ws`` carried nothing in time: leave it and go on over SSE.
  fallBack(ws) {
    if (ws !== this.ws || ws.framed || this.stopped) return;
    ws.abandoned = true;
    ws.close(1000, "falling back to SSE");
    this.ws = null;
    this.clearTimers();
    this.useSse();
  }

  useSse() {
    this.setTransport("sse");
    this.probes = 0;
    this.scheduleProbe();
    this.connect({ quiet: true });
  }

  setTransport(transport) {
    if (transport === this.transport) return;
    this.transport = transport;
    this.dispatchEvent(new CustomEvent("transport", { detail: { transport } }));
  }

  // The channels a connection asks for. Over SSE one the token may not read would refuse the
  // whole stream (403), so the channels refused to this token are left out; over a
  // WebSocket each subscription is answered on its own, so each is asked for again.
  streamedChannels() {
    const channels = [...this.handlers.keys()];
    if (this.transport !== "sse") return channels;
    return channels.filter((channel) => !this.refusedChannels.has(channel));
  }

  // Where every channel stands, as the SSE cursor: channel~epoch~offset, comma-separated.
  cursor() {
    const parts = [];
    for (const channel of this.streamedChannels()) {
      const position = this.positions.get(channel);
      if (position) parts.push(`${channel}~${position.epoch}~${position.offset}`);
    }
    return parts.join(",");
  }

  // The client reopens the stream itself (never EventSource's own retry), so each new
  // stream has a fresh token and resumes from the positions the handlers have seen.
  openSse(token) {
    const channels = this.streamedChannels();
    if (!channels.length) return; // every channel refused: nothing to stream until setToken()
    const params = new URLSearchParams({ channels: channels.join(","), token });
    const cursor = this.cursor();
    if (cursor) params.set("lastEventId", cursor);
    const es = new EventSource(`${this.httpUrl}/sse?${params}`);
    this.es = es;
    es.onopen = () => {
      es.opened = true;
      this.scheduleRefresh(token);
    };
    es.onmessage = (msg) => this.onFrame(JSON.parse(msg.data));
    es.onerror = () => {
      es.close();
      if (es === this.es) this.onClose({ code: 1006, reason: "" }, es.opened ? null : token);
    };
  }

  closeSse() {
    if (!this.es) return;
    this.es.close();
    this.es = null;
  }

  // Open the stream again, from the positions held (new channels, a new token).
  reopen() {
    this.closeSse();
    this.clearTimers();
    this.connect({ quiet: true });
  }

  scheduleProbe() {
    clearTimeout(this.probeTimer);
    const delay = Math.min(this.wsRetryMaxMs, this.wsRetryMinMs * 2 ** this.probes);
    this.probes += 1;
    this.probeTimer = setTimeout(() => this.probe(), delay);
  }

  // While on SSE: does a WebSocket get through now? One that answers a ping in time does,
  // and the client moves back to WebSockets, every channel resumed where SSE left it.
  async probe() {
    if (this.stopped || this.transport !== "sse") return;
    let token;
    try {
      token = await this.currentToken();
    } catch (err) {
      this.scheduleProbe();
      return;
    }
    const ws = new WebSocket(this.wsUrl(token));
    const done = (works) => {
      if (ws.done) return;
      ws.done = true;
      clearTimeout(timer);
      ws.onclose = null;
      ws.close(1000, "probe");
      if (this.stopped || this.transport !== "sse") return;
      if (!works) {
        this.scheduleProbe();
        return;
      }
      this.closeSse();
      this.clearTimers();
      this.setTransport("websocket");
      this.connect({ quiet: true });
    };
    const timer = setTimeout(() => done(false), this.fallbackAfterMs);
    ws.onopen = () => ws.send('{"op":"ping"}');
    ws.onmessage = () => done(true);
    ws.onclose = () => done(false);
  }

  // The newest stored events of each channel that asked for them, before its first
  // subscription; false when the token was rejected (the client has stopped or retries).
  async loadHistory(token) {
    for (const [channel, limit] of this.historyWanted) {
      if (this.positions.has(channel)) {
        this.historyWanted.delete(channel); // it already has events: no history twice
        continue;
      }
      const path = `/v1/channels/${encodeURIComponent(channel)}/history?limit=${limit}`;
      let response;
      try {
        response = await this.httpGet(path, token);
      } catch (err) {
        return true; // unreachable: the WebSocket attempt will tell
      }
      if (response.status === 401) {
        await this.rejected(response);
        return false;
      }
      // Refused (kept wanted: another token may read it); its subscription is refused too.
      if (await this.refusedBy(channel, response)) continue;
      this.historyWanted.delete(channel);
      if (!response.ok) continue; // subscribe without it: live events only
      const body = await response.json();
      let offset = body.offset;
      for (const { offset: at, event } of body.events) {
        offset = at;
        const frame = { op: "event", channel, offset: at, event, history: true };
        for (const handler of this.handlers.get(channel) || []) handler(event, frame);
      }
      this.positions.set(channel, { offset, epoch: body.epoch });
    }
    return true;
  }

  httpGet(path, token) {
    return fetch(`${this.httpUrl}${path}`, { headers: { Authorization: `Bearer ${token}` } });
  }

  // A 401 from the gateway: why, in its words; the client stops until setToken() unless
  // its token is a function (which may give a fresh one: it retries).
  async rejected(response) {
    const problem = await response.json().catch(() => ({}));
    const challenge = response.headers.get("WWW-Authenticate") || "";
    const message = problem.detail || "the token was refused";
    let reason = "invalid";
    if (!challenge.includes("error=")) reason = "missing";
    else if (/expired/i.test(message)) reason = "expired";
    const detail = { reason, message };
    if (typeof this.token === "function") {
      this.retry();
      this.setState("rejected", detail);
      return;
    }
    this.stopped = true;
    this.clearTimers();
    this.setState("rejected", detail);
  }

  refused(detail) {
    if (detail.code === "forbidden" || detail.code === "unknown_channel") {
      this.refusedChannels.add(detail.channel);
    }
    this.dispatchEvent(new CustomEvent("refused", { detail }));
  }

  // An SSE stream that did not open: a channel the token may not read refuses it whole, so
  // each one is asked about on the HTTP side; true when one was refused (fired "refused").
  async findRefused(token) {
    let found = false;
    for (const channel of this.streamedChannels()) {
      const path = `/v1/channels/${encodeURIComponent(channel)}/history?limit=1`;
      if (await this.refusedBy(channel, await this.httpGet(path, token))) found = true;
    }
    return found;
  }

  // A channel's history answered 403 or 404: "refused" fired for it, in the gateway's words.
  async refusedBy(channel, response) {
    if (response.status !== 403 && response.status !== 404) return false;
    const problem = await response.json().catch(() => ({}));
    const code = response.status === 403 ? "forbidden" : "unknown_channel";
    this.refused({ channel, code, message: problem.detail || response.statusText });
    return true;
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
        if (frame.channel && this.pending && this.pending.has(frame.channel)) {
          // A subscription refused (forbidden, unknown, unavailable): the rest go live.
          this.refused({ channel: frame.channel, code: frame.code, message: frame.message });
          this.settle(frame.channel);
        }
        break;
      default:
        this.dispatchEvent(new CustomEvent(frame.op, { detail: frame }));
    }
  }

  onSubscribed(frame) {
    const position = this.positions.get(frame.channel);
    // recovered:true is the gateway's word that every event after our offset follows, also
    // across a new epoch (replayed from the durable record): keep the offset, take the epoch.
    const resumed = position && frame.recovered;
    if (position && !resumed) {
      this.allRecovered = false;
      this.dispatchEvent(new CustomEvent("gap", { detail: frame }));
    }
    if (resumed) position.epoch = frame.epoch;
    else this.positions.set(frame.channel, { offset: frame.offset, epoch: frame.epoch });
    this.settle(frame.channel);
  }

  // ``channel`` has its answer (subscribed or refused); live once every channel has one.
  settle(channel) {
    if (this.pending) this.pending.delete(channel);
    if (this.pending && this.pending.size === 0) {
      this.pending = null;
      this.attempt = 0;
      if (this.switching && this.allRecovered) {
        // Another transport (or a new SSE stream), every channel resumed: still just live.
      } else if (this.everConnected && this.allRecovered) {
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
      if (this.es) {
        this.reopen(); // an SSE stream's token is in its URL: a new stream, resumed
        return;
      }
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

  // ``refusedToken``: the token of a connection that closed before it opened (the handshake
  // failed: refused credentials, a full gateway, a network that blocks WebSockets, or no
  // gateway at all). Both transports end here.
  async onClose(event, refusedToken = null) {
    this.clearTimers();
    this.ws = null;
    this.es = null;
    if (this.stopped) {
      this.setState("idle");
      return;
    }
    if (event.code === 4003) {
      this.stopped = true;
      this.setState("forbidden", { reason: "forbidden", message: event.reason || "forbidden" });
      return;
    }
    if (refusedToken !== null) {
      // Ask the HTTP side why, with the same token; anything but a 401 means retry.
      try {
        const response = await this.httpGet("/v1/channels/stats/history?limit=1", refusedToken);
        if (response.status === 401) {
          await this.rejected(response);
          return;
        }
        if (this.stopped) return;
        if (this.fallback && this.transport === "websocket") {
          // The gateway answers HTTP but its WebSocket cannot be reached: SSE it is.
          this.useSse();
          return;
        }
        if (this.transport === "sse" && (await this.findRefused(refusedToken))) {
          if (!this.stopped) this.connect({ quiet: true }); // the rest, at once
          return;
        }
      } catch (err) {
        // nothing answers: retry as for any drop
      }
      if (this.stopped) return;
    }
    this.retry({ reason: closeReason(event.code, refusedToken !== null), message: event.reason || "" });
  }

  // ``detail``: why, for the state event ({reason, message}; see closeReason).
  retry(detail = {}) {
    this.setState(this.everConnected ? "reconnecting" : "connecting", detail);
    // Full jitter, as Pulse's services back off: a wait drawn from the whole window, which
    // doubles per attempt up to the cap, so clients dropped together do not return together.
    const cap = Math.min(this.backoffMaxMs, this.backoffMinMs * 2 ** this.attempt);
    this.attempt += 1;
    const delay = Math.random() * cap;
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }
}

// The claims of a JWT, read without verifying it (for display: the gateway verifies).
export function tokenClaims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload));
  } catch (err) {
    return null;
  }
}

// Why a connection closed, in a word or two, from its close code (docs: ws-gateway README).
function closeReason(code, beforeOpen) {
  if (beforeOpen) return "cannot connect";
  switch (code) {
    case 1001:
      return "gateway going away";
    case 4000:
      return "no pong";
    case 4001:
      return "token expired";
    case 4008:
      return "slow consumer";
    case 4029:
      return "too many requests";
    default:
      return "connection lost";
  }
}

function httpBase(wsUrl) {
  try {
    const url = new URL(wsUrl, globalThis.location ? location.href : undefined);
    url.protocol = url.protocol === "wss:" ? "https:" : "http:";
    url.pathname = url.pathname.replace(/\/ws\/?$/, "");
    url.search = "";
    url.hash = "";
    return url.toString().replace(/\/$/, "");
  } catch (err) {
    return "";
  }
}
