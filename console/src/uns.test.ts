import { describe, expect, it } from "vitest";

import { buildTree, coverPaths, filterTree, formatAge, formatValue, qualityOfStatus, qualityTitle, type TagState } from "./uns";

const P = "acme/berlin/stamping/line-1";
const tags: TagState[] = [
  { path: `${P}/press-1/temp`, value: 21.5, unit: "degC", quality: "good", q: 0, ts: 1000 },
  { path: `${P}/press-1/state`, quality: "bad", q: 0x800a0000, reason: "timeout", ts: 1000 },
  { path: `${P}/oven-1/temp`, value: 180, unit: "degC", quality: "uncertain", q: 0x40000000 },
  { path: "acme/paris/paint/line-2/robot-1/speed", quality: "none" },
  { path: "not/a/tag", quality: "good" },
];

describe("the plant tree", () => {
  it("nests six levels, sorted, counting tags and bad ones", () => {
    const root = buildTree(tags);
    expect(root.tags).toBe(4);
    expect(root.bad).toBe(1);
    const acme = root.children[0]!;
    expect(acme.children.map((c) => c.name)).toEqual(["berlin", "paris"]);
    const line = acme.children[0]!.children[0]!.children[0]!;
    expect(line.path).toBe(P);
    expect(line.children.map((c) => c.name)).toEqual(["oven-1", "press-1"]);
    const press = line.children[1]!;
    expect(press.level).toBe(4);
    expect(press.children.map((c) => c.name)).toEqual(["state", "temp"]);
    expect(press.children[1]!.tag?.value).toBe(21.5);
  });

  it("filters by words of the path, unit or reason, and by bad only", () => {
    const root = buildTree(tags);
    expect(filterTree(root, { text: "press temp", badOnly: false })!.tags).toBe(1);
    expect(filterTree(root, { text: "DEGC", badOnly: false })!.tags).toBe(2);
    expect(filterTree(root, { text: "timeout", badOnly: false })!.tags).toBe(1);
    const bad = filterTree(root, { text: "", badOnly: true })!;
    expect(bad.tags).toBe(1);
    expect(bad.children[0]!.children.map((c) => c.name)).toEqual(["berlin"]);
    expect(filterTree(root, { text: "nothing-like-it", badOnly: false })!.children).toEqual([]);
  });

  it("asks the live stream for at most 16 subtrees covering every device", () => {
    const devices = Array.from({ length: 40 }, (_, i) => `acme/s${i % 3}/a/l/d${i}`);
    const cover = coverPaths(devices);
    expect(cover).toEqual(["acme/s0/a/l", "acme/s1/a/l", "acme/s2/a/l"]);
    expect(coverPaths([`${P}/press-1`, `${P}/press-1`, `${P}/oven-1`])).toEqual([`${P}/oven-1`, `${P}/press-1`]);
    expect(coverPaths(Array.from({ length: 20 }, (_, i) => `e${i}/s/a/l/d`))).toHaveLength(16);
  });
});

describe("what a tag row shows", () => {
  it("quality from the status code's top bits", () => {
    expect(qualityOfStatus(0)).toBe("good");
    expect(qualityOfStatus(0x40000000)).toBe("uncertain");
    expect(qualityOfStatus(0x80000000)).toBe("bad");
    expect(qualityOfStatus(0xc0000000)).toBe("bad");
    expect(qualityOfStatus(undefined)).toBe("none");
  });

  it("the reason and status on hover", () => {
    expect(qualityTitle(tags[1]!)).toBe("bad: timeout (status 0x800A0000)");
    expect(qualityTitle(tags[0]!)).toBe("good (status 0x00000000)");
    expect(qualityTitle(tags[3]!)).toBe("no value received yet");
  });

  it("values and ages as text", () => {
    expect(formatValue(21.5)).toBe("21.5");
    expect(formatValue(1 / 3)).toBe("0.333333");
    expect(formatValue(12345678901)).toBe("12345678901"); // integers exactly (counters)
    expect(formatValue(12345678901.5)).toBe("1.235e+10");
    expect(formatValue(42)).toBe("42");
    expect(formatValue(true)).toBe("true");
    expect(formatValue(null)).toBe("—");
    expect(formatValue("FAULT")).toBe("FAULT");
    expect(formatValue({ datetime: 0 })).toBe("1970-01-01T00:00:00.000Z");
    expect(formatAge(undefined, 0)).toBe("—");
    expect(formatAge(1000, 4500)).toBe("3 s");
    expect(formatAge(0, 125_000)).toBe("2 min");
    expect(formatAge(0, 7_300_000)).toBe("2 h");
    expect(formatAge(0, 3 * 86_400_000)).toBe("3 d");
    expect(formatAge(5000, 1000)).toBe("0 s"); // a clock a little ahead
  });
});
