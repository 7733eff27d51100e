// The review desk: payments in REVIEW with their reasons, and Approve / Decline for operators.
//
// The list comes from ingest (GET {ingest}/v1/payments?status=REVIEW, the viewer's token)
// and grows with REVIEW events from the payments channel. A decision is POSTed to
// {ingest}/v1/payments/{id}/review; the row changes to the decided status only when the
// decision's pulse.payment.updated event arrives (ingest's answer says it was accepted, the
// event says the pipeline has it). Refusals (409 already decided, 403 …) are said in words.

import { byId, el } from "./dom.js";
import { clockTime, fullStamp, money, number, reasonText, shortId } from "./format.js";

const PAGE = 100;
const MAX_PAGES = 5;
const MAX_ROWS = 300;
const MAX_REMEMBERED = 5000;

function problemText(problem, fallback) {
  return problem.detail || problem.title || fallback;
}

export class ReviewDesk {
  constructor(ingestUrl) {
    this.ingestUrl = ingestUrl;
    this.token = null;
    this.body = byId("review-rows");
    this.rows = new Map(); // payment id -> {tr, data}
    this.latest = new Map(); // payment id -> newest payment data seen on the feed
    this.pending = new Map(); // payment id -> its newest data not drawn yet (list and feed)
    this.loading = null;
  }

  say(text) {
    const note = byId("review-message");
    note.textContent = text || "";
    note.hidden = !text;
  }

  // A new token: (re)load the list when it may use the desk.
  setToken(token, claims) {
    this.token = token;
    this.enabled = false;
    if (!this.ingestUrl) {
      this.say("The review desk is not configured: set PULSE_CONSOLE_INGEST_URL on the gateway to ingest's URL.");
      return;
    }
    if (!claims || !(claims.roles || []).includes("ops")) {
      this.say("Deciding reviews needs a token with the ops role.");
      return;
    }
    this.enabled = true;
    this.load();
  }

  async request(method, path, body) {
    const headers = { Authorization: `Bearer ${this.token}` };
    if (body) headers["Content-Type"] = "application/json";
    try {
      const response = await fetch(`${this.ingestUrl}${path}`, {
        method,
        headers,
        body: body ? JSON.stringify(body) : undefined,
      });
      const payload = await response.json().catch(() => ({}));
      return { status: response.status, ok: response.ok, payload, retryAfter: response.headers.get("Retry-After") };
    } catch (err) {
      return {
        status: 0,
        ok: false,
        payload: {},
        unreachable: `Cannot reach ingest at ${this.ingestUrl} (is it running, and does its PULSE_CORS_ORIGINS allow ${location.origin}?).`,
      };
    }
  }

  // What a refused request means, in words.
  refusal(answer, what) {
    const detail = problemText(answer.payload, "");
    switch (answer.status) {
      case 0:
        return answer.unreachable;
      case 401:
        return `Ingest refused the token${detail ? `: ${detail}` : ""}. Paste a fresh one above.`;
      case 403:
        return `Not allowed: ${what} needs the ops role${detail ? ` (${detail})` : ""}.`;
      case 404:
        return `Ingest does not know this payment${detail ? ` (${detail})` : ""}.`;
      case 409:
        return `Already decided: ${detail || "the payment is no longer in REVIEW"}.`;
      case 429:
        return `Too many requests: retry ${answer.retryAfter ? `in ${answer.retryAfter} s` : "shortly"}.`;
      default:
        return `Ingest answered ${answer.status}${detail ? `: ${detail}` : ""}.`;
    }
  }

  load() {
    if (!this.loading) this.loading = this.loadPages().finally(() => (this.loading = null));
    return this.loading;
  }

  async loadPages() {
    this.say("Loading payments in review…");
    let cursor = null;
    const items = [];
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const query = `status=REVIEW&limit=${PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const answer = await this.request("GET", `/v1/payments?${query}`);
      if (!answer.ok) {
        this.say(`The review list could not be loaded. ${this.refusal(answer, "listing reviews")}`);
        return;
      }
      items.push(...(answer.payload.items || []));
      cursor = answer.payload.next_cursor;
      if (!cursor) break;
    }
    for (const payment of items) {
      const newer = this.latest.get(payment.payment_id);
      // The feed may have seen the decision before the list was read.
      const current = newer && (newer.updated_at || "") >= (payment.updated_at || "") ? newer : payment;
      this.pending.set(payment.payment_id, current);
    }
    this.say(cursor ? `Showing the oldest ${items.length} payments in review.` : "");
    this.flush();
  }

  // A payment event from the feed.
  onPayment(event) {
    const data = event.data || {};
    if (!data.payment_id || event.type === "pulse.payment.deleted") return;
    this.latest.set(data.payment_id, data);
    if (this.latest.size > MAX_REMEMBERED) this.latest.delete(this.latest.keys().next().value);
    const id = data.payment_id;
    // REVIEW payments, and any later news of one (drawn or not yet).
    if (this.enabled && (data.status === "REVIEW" || this.rows.has(id) || this.pending.has(id))) {
      this.pending.set(id, data);
    }
  }

  flush() {
    if (!this.pending.size) return;
    for (const data of this.pending.values()) {
      const known = this.rows.get(data.payment_id);
      if (known) {
        const changed = known.data.status !== data.status;
        known.data = { ...known.data, ...data };
        if (changed) this.draw(known); // else keep the note being typed and any message
      } else if (data.status === "REVIEW") {
        const entry = { data, tr: null };
        this.rows.set(data.payment_id, entry);
        this.draw(entry);
        this.body.append(entry.tr);
      }
    }
    this.pending.clear();
    for (const [id, entry] of this.rows) {
      if (this.rows.size <= MAX_ROWS) break;
      entry.tr.remove();
      this.rows.delete(id);
    }
    const open = [...this.rows.values()].filter((e) => e.data.status === "REVIEW").length;
    byId("review-count").textContent = `${number(open)} waiting`;
    byId("review-empty").hidden = this.rows.size > 0;
  }

  draw(entry) {
    const d = entry.data;
    const decided = d.status !== "REVIEW";
    if (!entry.tr) {
      entry.tr = el("tr", { testid: "review-row", dataset: { paymentId: d.payment_id } });
    }
    entry.tr.dataset.status = d.status;
    const reasons = d.fraud_reasons || [];
    entry.tr.replaceChildren(
      el("td", { class: "time", title: fullStamp(d.created_at) }, clockTime(d.created_at)),
      el("td", { class: "id", title: d.payment_id }, shortId(d.payment_id), el("div", { class: "sub" }, d.account_id || "")),
      el("td", { class: "amount" }, money(d.amount, d.currency)),
      el(
        "td",
        { class: "reasons" },
        reasons.length ? el("ul", {}, reasons.map((code) => el("li", { title: code }, reasonText(code)))) : "—",
        d.fraud_score !== undefined && d.fraud_score !== null ? el("div", { class: "sub" }, `score ${number(d.fraud_score)}`) : null,
      ),
      el("td", { class: "decision" }, decided ? this.outcome(d) : this.actions(entry)),
    );
  }

  outcome(d) {
    return el(
      "div",
      { class: "outcome" },
      el("span", { class: `status ${d.status}`, testid: "review-status" }, d.status),
      d.reviewed_by ? el("span", { class: "sub" }, ` by ${d.reviewed_by}`) : null,
      d.review_note ? el("div", { class: "sub note" }, `“${d.review_note}”`) : null,
    );
  }

  actions(entry) {
    const note = el("input", {
      class: "decision-note",
      testid: "review-note",
      placeholder: "note (optional)",
      maxlength: "500",
      "aria-label": "note for the decision",
    });
    const message = el("div", { class: "sub review-error", testid: "review-error", role: "status" });
    const approve = el("button", { type: "button", class: "approve", testid: "review-approve" }, "Approve");
    const decline = el("button", { type: "button", class: "decline", testid: "review-decline" }, "Decline");
    const decide = async (decision) => {
      approve.disabled = decline.disabled = note.disabled = true;
      message.textContent = "Sending…";
      const answer = await this.request("POST", `/v1/payments/${encodeURIComponent(entry.data.payment_id)}/review`, {
        decision,
        note: note.value.trim(),
      });
      if (entry.data.status !== "REVIEW") return; // the event came first: drawn already
      if (answer.ok) {
        message.textContent = `${decision === "APPROVED" ? "Approval" : "Decline"} accepted; waiting for the pipeline's event…`;
        return;
      }
      message.textContent = this.refusal(answer, "deciding a review");
      // A conflict is final (someone decided first: its event will show it); others may be retried.
      if (answer.status !== 409) approve.disabled = decline.disabled = note.disabled = false;
    };
    approve.addEventListener("click", () => decide("APPROVED"));
    decline.addEventListener("click", () => decide("DECLINED"));
    return el("div", { class: "actions" }, el("span", { class: "status REVIEW", testid: "review-status" }, "REVIEW"), note, approve, decline, message);
  }
}
