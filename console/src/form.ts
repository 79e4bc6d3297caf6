// The forms' rules: which keys each protocol's device form shows (the rest of the document is kept as it is),
// how an input's text becomes a JSON value, where the API's error `field` is shown, a typed write value, an audit
// row's changes. Tested in form.test.ts.

import { protocolOf, type DeviceDoc } from "./api";

export interface ProtocolForm {
  device: string[]; // connection keys (gateway/drivers/<protocol>/config.py DEVICE_KEYS)
  tag: string[]; // address keys (TAG_KEYS), besides name, type, unit, writable
}

const MODBUS_TAG = ["table", "address", "bit", "length"];

export const PROTOCOLS: Record<string, ProtocolForm> = {
  modbus_tcp: { device: ["host", "port", "unit_id"], tag: MODBUS_TAG },
  modbus_rtu_tcp: { device: ["host", "port", "unit_id"], tag: MODBUS_TAG },
  modbus_rtu: { device: ["serial_port", "baudrate", "parity", "unit_id"], tag: MODBUS_TAG },
  opcua: { device: ["endpoint", "mode", "username"], tag: ["node", "length"] },
  s7: { device: ["host", "port", "rack", "slot"], tag: ["address", "length"] },
  enip: { device: ["host", "port", "slot"], tag: ["tag", "length"] },
  mqtt: { device: ["host", "port"], tag: ["topic", "value"] },
};

export const TYPES = [
  "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string",
] as const;

const COMMON = ["id", "enterprise", "site", "area", "line", "protocol", "interval_ms", "timeout_ms"];
const TAG_COMMON = ["name", "type", "unit"];

export function toInput(v: unknown): string {
  if (v === undefined || v === null) return "";
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** An input's text as a value: empty → absent, a plain number → the number, else the text. */
export function fromInput(text: string): unknown {
  if (text === "") return undefined;
  if (/^-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?$/.test(text.trim())) return Number(text.trim());
  return text;
}

/** The form field that shows an error the API gave for `field`, or null for the page's banner. */
export function errorPlace(field: string, doc: DeviceDoc): string | null {
  const form = PROTOCOLS[protocolOf(doc)];
  const device = new Set([...COMMON, ...(form?.device ?? [])].map((k) => `device.${k}`));
  if (device.has(field)) return field;
  const m = /^device\.tags\[(\d+)\](?:\.([^.[\]]+))?/.exec(field);
  if (m) {
    const i = Number(m[1]);
    if (i >= (doc.tags?.length ?? 0)) return null;
    const key = m[2];
    if (key !== undefined && [...TAG_COMMON, ...(form?.tag ?? [])].includes(key)) return `device.tags[${i}].${key}`;
    return `device.tags[${i}]`;
  }
  if (field === "device.tags") return null;
  return null;
}

/** The text typed into a write box as the JSON value the API takes, by the tag's type. */
export function parseWriteValue(text: string, type: string | undefined): unknown {
  const t = text.trim();
  if (type === "string") return text;
  if (type === "bool") {
    if (/^(true|1|on)$/i.test(t)) return true;
    if (/^(false|0|off)$/i.test(t)) return false;
    throw new Error("a bool: true or false");
  }
  if (t === "" || Number.isNaN(Number(t))) throw new Error("a number");
  return Number(t);
}

/** What changed between two documents, one line per top-level key. */
export function diffLines(before: Record<string, unknown> | null, after: Record<string, unknown> | null): string[] {
  if (before === null && after === null) return [];
  if (before === null) return ["created"];
  if (after === null) return ["deleted"];
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
  const out: string[] = [];
  for (const k of keys) {
    const a = JSON.stringify(before[k]);
    const b = JSON.stringify(after[k]);
    if (a === b) continue;
    if (a === undefined) out.push(`+ ${k}: ${b}`);
    else if (b === undefined) out.push(`- ${k}: ${a}`);
    else out.push(`~ ${k}: ${a} → ${b}`);
  }
  return out;
}
