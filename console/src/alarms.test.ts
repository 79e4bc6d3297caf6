import { describe, expect, it } from "vitest";

import { ackBatches, actorName, alarmState, needsAck, sortAlarms, type AlarmRow } from "./alarms";

function row(over: Partial<AlarmRow>): AlarmRow {
  return {
    tag: "acme/b/a/l/d/t", alarm: "high", raised_at: "2026-01-05T12:00:00.000Z", cleared_at: null, active: true,
    raised_value: 91, raised_limit: 90, severity: 700, cleared_value: null, acked_at: null, acked_by: null,
    ack_comment: null, ...over,
  };
}

describe("alarm states", () => {
  it("has ISA-18.2's four states", () => {
    expect(alarmState(row({}))).toBe("active-unacked");
    expect(alarmState(row({ acked_at: "2026-01-05T12:01:00.000Z" }))).toBe("active-acked");
    expect(alarmState(row({ active: false, cleared_at: "2026-01-05T12:02:00.000Z" }))).toBe("cleared-unacked");
    expect(alarmState(row({ active: false, cleared_at: "x", acked_at: "y" }))).toBe("normal");
  });

  it("a clear without its raise has nothing to acknowledge", () => {
    const orphan = row({ raised_at: null, active: false, cleared_at: "2026-01-05T12:02:00.000Z" });
    expect(alarmState(orphan)).toBe("normal");
    expect(needsAck(orphan)).toBe(false);
    expect(ackBatches([orphan])).toEqual([]);
  });

  it("names the actor", () => {
    expect(actorName("user:olga")).toBe("olga");
    expect(actorName("ops-robot")).toBe("key ops-robot");
    expect(actorName(null)).toBe("");
  });
});

describe("acknowledge all shown", () => {
  it("names only the unacknowledged raises, in batches of the API's limit", () => {
    const rows = [
      ...Array.from({ length: 1001 }, (_, i) => row({ tag: `acme/b/a/l/d/t${i}` })),
      row({ acked_at: "2026-01-05T12:01:00.000Z" }),
    ];
    const batches = ackBatches(rows);
    expect(batches.map((b) => b.length)).toEqual([500, 500, 1]);
    expect(batches[0]?.[0]).toEqual({ tag: "acme/b/a/l/d/t0", alarm: "high", raised_at: "2026-01-05T12:00:00.000Z" });
  });
});

describe("order", () => {
  it("lists what waits for an acknowledgement first, newest first within a state", () => {
    const a = row({ tag: "a", acked_at: "z" });
    const b = row({ tag: "b", raised_at: "2026-01-05T12:00:00.000Z" });
    const c = row({ tag: "c", raised_at: "2026-01-05T13:00:00.000Z" });
    const d = row({ tag: "d", active: false, cleared_at: "2026-01-05T14:00:00.000Z" });
    const e = row({ tag: "e", active: false, cleared_at: "2026-01-05T14:00:00.000Z", acked_at: "z" });
    expect(sortAlarms([e, a, b, d, c]).map((r) => r.tag)).toEqual(["c", "b", "d", "a", "e"]);
  });
});
