// The viewer's token: where it comes from, where it is kept, and what the page says when
// there is none or the gateway refuses it.
//
// A token in the address (/#token=… or ?token=…) is taken, kept in sessionStorage (this tab
// only, gone when it closes) and removed from the address bar, so it does not end up in the
// history or in a screenshot. The connection badge always says why the page is not live.

import { byId } from "./dom.js";
import { zonedTime } from "./format.js";

const STORAGE_KEY = "pulse-console-token";

export function initialToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const query = new URLSearchParams(location.search);
  const given = hash.get("token") || query.get("token");
  if (given) {
    sessionStorage.setItem(STORAGE_KEY, given);
    hash.delete("token");
    query.delete("token");
    const rest = `${query.toString() ? `?${query}` : ""}${hash.toString() ? `#${hash}` : ""}`;
    history.replaceState(null, "", `${location.pathname}${rest}`);
    return given;
  }
  return sessionStorage.getItem(STORAGE_KEY);
}

export function keepToken(token) {
  sessionStorage.setItem(STORAGE_KEY, token);
}

// The badge's words for each state of the client (and of the page around it).
export function badgeText(state, detail = {}) {
  switch (state) {
    case "rejected":
      return `token rejected: ${detail.reason || "invalid"}`;
    case "forbidden":
      return detail.reason && detail.reason !== "forbidden" ? `forbidden: ${detail.reason}` : "forbidden";
    case "no-token":
      return "no token";
    default:
      return state;
  }
}

export function showState(state, detail = {}) {
  const badge = byId("connection-state");
  badge.textContent = badgeText(state, detail);
  badge.dataset.state = state;
  badge.title = detail.message || "";
  // While it is trying again, why it had to (the close code's meaning).
  const retrying = (state === "connecting" || state === "reconnecting") && detail.reason;
  byId("state-why").textContent = retrying ? detail.reason : "";
}

// How events reach the page: "websocket", or "sse" where WebSockets are blocked.
export function showTransport(transport) {
  const label = byId("connection-transport");
  label.textContent = transport;
  label.dataset.transport = transport;
}

export function describeToken(claims) {
  const who = byId("who");
  if (!claims) {
    who.textContent = "";
    return;
  }
  const roles = (claims.roles || []).join(", ") || "no roles";
  const expires = claims.exp ? ` · expires ${zonedTime(claims.exp * 1000)}` : "";
  who.textContent = `${claims.sub || "?"} (${roles})${expires}`;
}

// The panel asking for a token, with the reason it is asked for; ``onToken`` gets the pasted
// one. Hidden again by hideTokenPanel().
export function askForToken(message, onToken) {
  const panel = byId("token-panel");
  byId("token-message").textContent = message;
  panel.hidden = false;
  const input = byId("token-input");
  input.value = "";
  input.focus();
  byId("token-form").onsubmit = (e) => {
    e.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    keepToken(token);
    panel.hidden = true;
    onToken(token);
  };
}

export function hideTokenPanel() {
  byId("token-panel").hidden = true;
}
