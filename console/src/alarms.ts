// Alarms as the console shows them (GET /history/alarms, POST /alarms/ack): the ISA-18.2 state of a row,
// who acknowledged it, and which rows an "acknowledge all shown" names. Pure functions, tested by vitest.

export interface AlarmRow {
  tag: string;
  alarm: string;
  raised_at: string | null;
  cleared_at: string | null;
  active: boolean;
  raised_value: number | null;
  raised_limit: number | null;
  severity: number | null;
  cleared_value: number | null;
  acked_at: string | null;
  acked_by: string | null;
  ack_comment: string | null;
}

export type AlarmState = "active-unacked" | "active-acked" | "cleared-unacked" | "normal";

/** ISA-18.2's four states; a clear whose raise is not stored has nothing to acknowledge ("normal"). */
export function alarmState(a: AlarmRow): AlarmState {
  if (a.active) return a.acked_at ? "active-acked" : "active-unacked";
  return a.raised_at !== null && !a.acked_at ? "cleared-unacked" : "normal";
}

export const STATE_TEXT: Record<AlarmState, string> = {
  "active-unacked": "active, unacknowledged",
  "active-acked": "active, acknowledged",
  "cleared-unacked": "cleared, unacknowledged",
  normal: "cleared",
};

/** Whether the row waits for an acknowledgement. */
export function needsAck(a: AlarmRow): boolean {
  return a.raised_at !== null && !a.acked_at;
}

/** "olga" for "user:olga"; an API key's name as it is. */
export function actorName(by: string | null): string {
  if (!by) return "";
  return by.startsWith("user:") ? by.slice(5) : `key ${by}`;
}

/** The names POST /alarms/ack takes for these rows, those still unacknowledged, in batches the API accepts. */
export function ackBatches(rows: AlarmRow[], size = 500): { tag: string; alarm: string; raised_at: string }[][] {
  const refs = rows.filter(needsAck).map((a) => ({ tag: a.tag, alarm: a.alarm, raised_at: a.raised_at as string }));
  const out = [];
  for (let i = 0; i < refs.length; i += size) out.push(refs.slice(i, i + size));
  return out;
}

/** Rows in the order the page lists them: waiting for an acknowledgement first, then active, then newest. */
export function sortAlarms(rows: AlarmRow[]): AlarmRow[] {
  const rank = (a: AlarmRow): number => ["active-unacked", "cleared-unacked", "active-acked", "normal"].indexOf(alarmState(a));
  return [...rows].sort((a, b) => rank(a) - rank(b) || (b.raised_at ?? b.cleared_at ?? "").localeCompare(a.raised_at ?? a.cleared_at ?? ""));
}
