// How the console writes times, amounts, numbers and fraud reasons: in the viewer's own
// time zone and locale, every time labelled with its zone, every reason in words.

const timeFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});
const minuteFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const stampFormat = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium",
  timeStyle: "long",
});
const zoneFormat = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" });

// The viewer's zone as people write it ("CET", "EST", "GMT+1"), for labels.
export function zoneName(date = new Date()) {
  const part = zoneFormat.formatToParts(date).find((p) => p.type === "timeZoneName");
  return part ? part.value : "local time";
}

function asDate(value) {
  if (value instanceof Date) return value;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

// "14:03:12" in the viewer's zone (the zone is in the column's or axis's label).
export function clockTime(value) {
  const date = asDate(value);
  return date ? timeFormat.format(date) : "";
}

// "14:03" in the viewer's zone.
export function clockMinute(value) {
  const date = asDate(value);
  return date ? minuteFormat.format(date) : "";
}

// "14:03:12 CET": a time standing alone.
export function zonedTime(value) {
  const date = asDate(value);
  return date ? `${timeFormat.format(date)} ${zoneName(date)}` : "";
}

// The full date and time with its zone, for tooltips.
export function fullStamp(value) {
  const date = asDate(value);
  return date ? stampFormat.format(date) : "";
}

const moneyFormats = new Map();

// "€12.50", "¥1,200": the amount (a decimal string) in its currency, in the viewer's locale.
export function money(amount, currency) {
  const value = Number(amount);
  if (!Number.isFinite(value)) return `${amount ?? ""} ${currency ?? ""}`.trim();
  if (!currency) return number(value, 2);
  let format = moneyFormats.get(currency);
  if (!format) {
    try {
      format = new Intl.NumberFormat(undefined, { style: "currency", currency });
    } catch (err) {
      format = { format: (v) => `${number(v, 2)} ${currency}` };
    }
    moneyFormats.set(currency, format);
  }
  return format.format(value);
}

const numberFormats = new Map();

// A number with at most ``digits`` decimals, grouped as the viewer's locale groups them.
export function number(value, digits = 0) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return "–";
  let format = numberFormats.get(digits);
  if (!format) {
    format = new Intl.NumberFormat(undefined, { maximumFractionDigits: digits });
    numberFormats.set(digits, format);
  }
  return format.format(Number(value));
}

// Seconds as people say them: "45 s", "3 min 20 s", "2 h 5 min".
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return s % 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s / 60} min`;
  const minutes = Math.floor((s % 3600) / 60);
  return minutes ? `${Math.floor(s / 3600)} h ${minutes} min` : `${Math.floor(s / 3600)} h`;
}

let reasonWords = {};

// The sentences for the fraud rules' reason codes (static/console/fraud-reasons.json).
export async function loadReasonWords() {
  try {
    const response = await fetch("/static/console/fraud-reasons.json");
    if (response.ok) reasonWords = await response.json();
  } catch (err) {
    reasonWords = {};
  }
}

// A reason code in words; a code the console does not know yet is still made readable.
export function reasonText(code) {
  const words = reasonWords[code];
  if (words) return words;
  const plain = String(code).replace(/_/g, " ");
  return plain.charAt(0).toUpperCase() + plain.slice(1) + ".";
}

// The short id shown for a payment (the whole one is in the row's title).
export function shortId(id) {
  return String(id || "").slice(0, 8);
}
