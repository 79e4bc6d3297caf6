import { describe, expect, it } from "vitest";

import { align, bucketFor, compact, seriesOf, shortNames } from "./trend";

describe("trends", () => {
  it("picks a bucket giving at most 600 points", () => {
    expect(bucketFor(0, 60_000)).toBe("1s");
    expect(bucketFor(0, 3_600_000)).toBe("10s");
    expect(bucketFor(0, 86_400_000)).toBe("5m");
    expect(bucketFor(0, 30 * 86_400_000)).toBe("6h");
    expect(bucketFor(0, 3650 * 86_400_000)).toBe("1d");
  });

  it("aligns several series on the union of their times", () => {
    const s = seriesOf({
      series: [
        { tag: "a", unit: null, buckets: [{ time: "2026-01-01T00:00:00Z", avg: 1 }, { time: "2026-01-01T00:01:00Z", avg: 2 }] },
        { tag: "b", unit: "bar", buckets: [{ time: "2026-01-01T00:01:00Z", avg: 5 }, { time: "2026-01-01T00:02:00Z", avg: null }] },
      ],
    });
    const t0 = Date.parse("2026-01-01T00:00:00Z") / 1000;
    expect(align(s)).toEqual([[t0, t0 + 60, t0 + 120], [1, 2, null], [null, 5, null]]);
    expect(seriesOf({ tag: "x", unit: "degC", buckets: [] })).toEqual([{ tag: "x", unit: "degC", buckets: [] }]);
  });

  it("names series by what tells them apart, and axis numbers short", () => {
    expect(shortNames(["a/b/c/d/press-1/temp", "a/b/c/d/press-1/pressure"])).toEqual(["temp", "pressure"]);
    expect(shortNames(["a/b/c/d/press-1/temp", "a/b/c/d/oven-1/temp"])).toEqual(["press-1/temp", "oven-1/temp"]);
    expect(shortNames(["a/b/c/d/press-1/temp"])).toEqual(["press-1/temp"]);
    expect(compact(1_757_466_082)).toBe("1.76G");
    expect(compact(25_300)).toBe("25.3k");
    expect(compact(0.1 + 0.2)).toBe("0.3");
  });
});
