import { describe, expect, it } from "vitest";

import {
  ALL_CLOSED, ALL_OPEN, defaultDepth, flatten, isOpen, PlantTree, scrollToRow, toggled, viewWindow, withOpen,
  type Expansion, type PlantNode,
} from "./tree";
import { buildTree, type TagState } from "./uns";

const L1 = "acme/berlin/stamping/line-1";
const L2 = "acme/paris/paint/line-2";
const configured: TagState[] = [
  { path: `${L1}/press-10/temp`, unit: "degC", quality: "none" },
  { path: `${L1}/press-2/temp`, unit: "degC", quality: "none" },
  { path: `${L1}/press-2/state`, quality: "none" },
  { path: `${L2}/robot-1/speed`, unit: "rpm", quality: "none" },
];

function plant(): PlantTree {
  const t = new PlantTree();
  t.setConfigured(configured);
  return t;
}

const names = (rows: { node: PlantNode }[]): string[] => rows.map((r) => r.node.path);

/** The counts of every branch, checked against a tree built from scratch (uns.buildTree). */
function countsAgree(t: PlantTree): void {
  const tags: TagState[] = [];
  const walk = (n: PlantNode): void => {
    if (n.level === 5) tags.push(n.tag as TagState);
    else n.children.forEach(walk);
  };
  walk(t.root);
  const fresh = buildTree(tags);
  const check = (a: PlantNode, b: ReturnType<typeof buildTree>): void => {
    expect([a.path, a.tags, a.bad]).toEqual([b.path, b.tags, b.bad]);
    expect(a.children.map((c) => c.name)).toEqual(b.children.map((c) => c.name));
    a.children.forEach((c, i) => check(c, b.children[i]!));
  };
  check(t.root, fresh);
}

describe("the plant tree kept in place", () => {
  it("builds sorted (numbers as numbers) from the configured tags", () => {
    const t = plant();
    expect(t.root.tags).toBe(4);
    expect(t.get(L1)!.children.map((c) => c.name)).toEqual(["press-2", "press-10"]);
    expect(t.get(`${L1}/press-2`)!.children.map((c) => c.name)).toEqual(["state", "temp"]);
    expect(t.levelCounts()).toEqual([1, 2, 2, 2, 3, 4]);
    countsAgree(t);
  });

  it("counts bad tags up the six levels as values come and go, without a new version", () => {
    const t = plant();
    const v0 = t.version;
    t.apply([{ path: `${L1}/press-2/temp`, value: 21.5, quality: "good", ts: 1 }]);
    expect(t.get(`${L1}/press-2/temp`)!.tag).toMatchObject({ value: 21.5, unit: "degC", quality: "good" });
    t.apply([{ path: `${L1}/press-2/temp`, quality: "bad", reason: "timeout" }, { path: `${L1}/press-2/state`, quality: "bad" }]);
    expect([t.root.bad, t.get("acme")!.bad, t.get(`${L1}/press-2`)!.bad, t.get(`${L1}/press-10`)!.bad]).toEqual([2, 2, 2, 0]);
    t.apply([{ path: `${L1}/press-2/temp`, quality: "bad", reason: "timeout again" }]); // still bad: counted once
    expect(t.root.bad).toBe(2);
    t.apply([{ path: `${L1}/press-2/temp`, value: 20, quality: "good" }]);
    expect([t.root.bad, t.get(`${L1}/press-2`)!.bad]).toEqual([1, 1]);
    expect(t.version).toBe(v0); // the same rows: nothing to flatten again
    // a removed configured tag goes back to "no value yet", and is no longer bad
    t.apply([{ path: `${L1}/press-2/state`, removed: true }]);
    expect(t.get(`${L1}/press-2/state`)!.tag?.quality).toBe("none");
    expect(t.root.bad).toBe(0);
    countsAgree(t);
  });

  it("puts a tag first seen live in its place, and takes it out again with its empty branches", () => {
    const t = plant();
    const v0 = t.version;
    t.apply([{ path: `${L1}/press-3/temp`, value: 1, quality: "bad" }, { path: "beta/s/a/l/d/x", quality: "good" }]);
    expect(t.version).toBeGreaterThan(v0);
    expect(t.get(L1)!.children.map((c) => c.name)).toEqual(["press-2", "press-3", "press-10"]);
    expect(t.root.children.map((c) => c.name)).toEqual(["acme", "beta"]);
    expect([t.root.tags, t.root.bad, t.get(L1)!.tags]).toEqual([6, 1, 4]);
    countsAgree(t);
    t.apply([{ path: `${L1}/press-3/temp`, removed: true }, { path: "beta/s/a/l/d/x", removed: true }]);
    expect(t.get(`${L1}/press-3`)).toBeUndefined();
    expect(t.get("beta")).toBeUndefined();
    expect(t.root.children.map((c) => c.name)).toEqual(["acme"]);
    expect([t.root.tags, t.root.bad]).toEqual([4, 0]);
    t.apply([{ path: "not/a/tag", quality: "good" }]);
    expect(t.root.tags).toBe(4);
    countsAgree(t);
  });

  it("keeps the live values when the configuration is loaded again", () => {
    const t = plant();
    t.apply([{ path: `${L1}/press-2/temp`, value: 7, quality: "bad" }, { path: `${L1}/only-live/x`, quality: "good" }]);
    t.setConfigured(configured.slice(1)); // press-10 left the configuration
    expect(t.get(`${L1}/press-10`)).toBeUndefined();
    expect(t.get(`${L1}/press-2/temp`)!.tag).toMatchObject({ value: 7, unit: "degC" });
    expect(t.get(`${L1}/only-live/x`)).toBeDefined();
    expect([t.root.tags, t.root.bad]).toEqual([4, 1]);
    countsAgree(t);
  });
});

describe("filter and bad only", () => {
  it("counts what the filter keeps, and follows values in and out of it", () => {
    const t = plant();
    t.apply([{ path: `${L1}/press-2/state`, quality: "bad", reason: "timeout" }]);
    t.setFilter({ text: "press temp", badOnly: false });
    expect(t.filtering).toBe(true);
    expect([t.root.shown, t.root.tags]).toEqual([2, 4]);
    t.setFilter({ text: "", badOnly: true });
    expect([t.root.shown, t.root.shownBad, t.get(L2)!.shown]).toEqual([1, 1, 0]);
    const v = t.version;
    t.apply([{ path: `${L2}/robot-1/speed`, quality: "bad" }]); // into "bad only": new rows
    expect([t.root.shown, t.get(L2)!.shown]).toEqual([2, 1]);
    expect(t.version).toBeGreaterThan(v);
    t.apply([{ path: `${L2}/robot-1/speed`, quality: "good" }]);
    expect(t.root.shown).toBe(1);
    t.setFilter({ text: "", badOnly: false });
    expect([t.filtering, t.root.shown]).toEqual([false, 4]);
  });

  it("shows only the branches leading to matches, expanded", () => {
    const t = plant();
    t.setFilter({ text: "robot", badOnly: false });
    expect(names(flatten(t, ALL_OPEN))).toEqual(["acme", "acme/paris", "acme/paris/paint", L2, `${L2}/robot-1`, `${L2}/robot-1/speed`]);
    t.setFilter({ text: "nothing-like-it", badOnly: false });
    expect(flatten(t, ALL_OPEN)).toEqual([]);
  });
});

describe("rows by what is open", () => {
  it("flattens open branches only, with their place among siblings", () => {
    const t = plant();
    const all = flatten(t, ALL_OPEN);
    expect(all).toHaveLength(14); // 10 branches + 4 tags
    expect(names(all).slice(4, 8)).toEqual([`${L1}/press-2`, `${L1}/press-2/state`, `${L1}/press-2/temp`, `${L1}/press-10`]);
    expect(all.slice(4, 8).map((r) => [r.pos, r.of, r.open])).toEqual([[1, 2, true], [1, 2, false], [2, 2, false], [2, 2, true]]);
    expect(names(flatten(t, ALL_CLOSED))).toEqual(["acme"]);
    // a depth of 2: enterprises and sites open, areas shown closed
    expect(names(flatten(t, { depth: 2, flipped: new Set() }))).toEqual(["acme", "acme/berlin", "acme/berlin/stamping", "acme/paris", "acme/paris/paint"]);
  });

  it("toggles one branch against the depth, either way", () => {
    const t = plant();
    let e: Expansion = { depth: 2, flipped: new Set() };
    const berlin = t.get("acme/berlin")!;
    const stamping = t.get("acme/berlin/stamping")!;
    e = toggled(e, berlin);
    expect(isOpen(e, berlin)).toBe(false);
    expect(names(flatten(t, e))).toEqual(["acme", "acme/berlin", "acme/paris", "acme/paris/paint"]);
    e = toggled(toggled(e, berlin), stamping);
    expect(isOpen(e, berlin) && isOpen(e, stamping)).toBe(true);
    expect(names(flatten(t, e))).toContain(L1);
    expect(withOpen(e, stamping, true)).toBe(e); // already open: the same object, no re-render
    expect(isOpen(withOpen(e, stamping, false), stamping)).toBe(false);
    expect(isOpen(ALL_OPEN, t.get(`${L1}/press-2/temp`)!)).toBe(false); // a tag is never "open"
  });

  it("opens a small plant fully and a big one at the level that keeps a few hundred rows", () => {
    expect(defaultDepth(plant())).toBe(5);
    const big = new PlantTree();
    const tags: TagState[] = [];
    // 2 sites x 3 areas x 4 lines x 25 devices x 40 tags = 24,000 tags, 600 devices
    for (let s = 0; s < 2; s++)
      for (let a = 0; a < 3; a++)
        for (let l = 0; l < 4; l++)
          for (let d = 0; d < 25; d++)
            for (let g = 0; g < 40; g++) tags.push({ path: `e/s${s}/a${a}/l${l}/d${d}/t${g}`, quality: "none" });
    big.setConfigured(tags);
    expect(big.root.tags).toBe(24_000);
    // levels: 1 + 2 + 6 + 24 = 33 rows with the lines shown; the 600 devices would be too many
    expect(defaultDepth(big)).toBe(3);
    expect(flatten(big, { depth: defaultDepth(big), flipped: new Set() })).toHaveLength(33);
    expect(defaultDepth(big, 500, 10)).toBe(2); // 9 rows
    expect(defaultDepth(big, 500, 1)).toBe(0); // never less than the enterprises
  });
});

describe("the viewport's window", () => {
  it("renders the rows in view plus the overscan, with spacers for the rest", () => {
    expect(viewWindow(0, 300, 10_000, 30, 5)).toEqual({ start: 0, end: 15, before: 0, after: 9985 * 30 });
    expect(viewWindow(30_000, 300, 10_000, 30, 5)).toEqual({ start: 995, end: 1015, before: 995 * 30, after: 8985 * 30 });
    // at the end: the last row in, nothing after
    const end = viewWindow(10_000 * 30 - 300, 300, 10_000, 30, 5);
    expect([end.end, end.after]).toEqual([10_000, 0]);
    // fewer rows than the viewport holds, or none
    expect(viewWindow(0, 900, 3, 30, 5)).toEqual({ start: 0, end: 3, before: 0, after: 0 });
    expect(viewWindow(500, 900, 0, 30, 5)).toEqual({ start: 0, end: 0, before: 0, after: 0 });
    // scrolled past a list that has just shrunk (a filter): clamped
    expect(viewWindow(1e6, 300, 20, 30, 5)).toEqual({ start: 15, end: 20, before: 450, after: 0 });
    // a 40 px header above the rows
    expect(viewWindow(40 + 300, 300, 100, 30, 0, 40)).toMatchObject({ start: 10, end: 20 });
  });

  it("scrolls a row into view only when it is out of it", () => {
    expect(scrollToRow(5, 0, 300, 30)).toBe(0);
    expect(scrollToRow(10, 0, 300, 30)).toBe(30); // its bottom at the viewport's
    expect(scrollToRow(2, 300, 300, 30)).toBe(60); // its top at the viewport's
    expect(scrollToRow(10, 0, 300, 30, 40)).toBe(70); // below a 40 px sticky header
    expect(scrollToRow(3, 100, 300, 30, 40)).toBe(90);
  });
});
