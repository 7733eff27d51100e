// The payments feed (a row per payment, its status following the events) and the fraud
// alerts. Events are taken as they come and drawn once per frame, so a busy pipeline costs
// the page one small DOM update per frame, not one per event.

import { byId, el } from "./dom.js";
import { clockTime, fullStamp, money, number, reasonText, shortId } from "./format.js";

const MAX_PAYMENTS = 150;
const MAX_ALERTS = 100;

function statusCell(status) {
  return el("span", { class: `status ${status || ""}` }, status || "");
}

export class PaymentFeed {
  constructor() {
    this.body = byId("payments");
    this.rows = new Map(); // payment id -> tr, newest first in the table
    this.pending = new Map(); // payment id -> the latest data not drawn yet
  }

  add(event) {
    const data = event.data || {};
    if (!data.payment_id) return;
    const deleted = event.type === "pulse.payment.deleted";
    this.pending.set(data.payment_id, { data, deleted, time: event.time });
  }

  flush() {
    if (!this.pending.size) return;
    const fresh = document.createDocumentFragment();
    for (const [id, { data, deleted, time }] of this.pending) {
      const tr = this.rows.get(id);
      if (deleted) {
        if (tr) tr.remove();
        this.rows.delete(id);
      } else if (tr) {
        this.update(tr, data);
      } else {
        const created = data.created_at || time;
        const added = el(
          "tr",
          { testid: "feed-row", dataset: { paymentId: id }, id: `payment-${id}` },
          el("td", { class: "time", title: fullStamp(created) }, clockTime(created)),
          el("td", { class: "id", title: id }, shortId(id)),
          el("td", { class: "account" }, data.account_id || ""),
          el("td", { class: "merchant wide-only" }, data.merchant_id || ""),
          el("td", { class: "amount" }, money(data.amount, data.currency)),
          el("td", { class: "status-cell" }, statusCell(data.status)),
        );
        this.update(added, data);
        this.rows.set(id, added);
        fresh.prepend(added); // the newest of the batch on top
      }
    }
    this.pending.clear();
    this.body.prepend(fresh);
    // Map order is insertion order: the oldest rows go first.
    for (const [id, tr] of this.rows) {
      if (this.rows.size <= MAX_PAYMENTS) break;
      tr.remove();
      this.rows.delete(id);
    }
  }

  update(tr, data) {
    if (!data.status || tr.dataset.status === data.status) return;
    tr.dataset.status = data.status;
    tr.querySelector(".status-cell").replaceChildren(statusCell(data.status));
  }
}

export class AlertList {
  constructor() {
    this.body = byId("alerts");
    this.pending = [];
  }

  add(event) {
    this.pending.push(event);
  }

  flush() {
    if (!this.pending.length) return;
    const fresh = document.createDocumentFragment();
    for (const event of this.pending.slice(-MAX_ALERTS)) fresh.prepend(this.row(event));
    this.pending = [];
    this.body.prepend(fresh);
    while (this.body.children.length > MAX_ALERTS) this.body.lastElementChild.remove();
  }

  row(event) {
    const d = event.data || {};
    const reasons = d.reasons || [];
    return el(
      "li",
      { testid: "alert-row", class: `alert ${d.decision || ""}`, dataset: { paymentId: d.payment_id || "" } },
      el(
        "div",
        { class: "alert-head" },
        el("time", { datetime: event.time, title: fullStamp(event.time) }, clockTime(event.time)),
        statusCell(d.decision),
        el("span", { class: "score", title: "risk score, 0 to 100" }, `score ${number(d.score)}`),
        el("span", { class: "amount" }, money(d.amount, d.currency)),
        el("span", { class: "id", title: d.payment_id }, `${shortId(d.payment_id)} · ${d.account_id || ""}`),
      ),
      reasons.length
        ? el("ul", { class: "reasons" }, reasons.map((code) => el("li", { title: code }, reasonText(code))))
        : null,
    );
  }
}
