// The plant tree as the Plant page keeps it for tens of thousands of tags: built once from the configured tags
// (and again only when the set of paths changes), then updated in place by the live stream — a value costs a
// walk up its six ancestors to keep the tag and bad counts, never a rebuild or a sort. What is on screen is a
// flat list of the visible rows (the branches that are open, the tags under open devices) and, of that list,
// only the window the viewport shows. Pure logic, tested by vitest (tree.test.ts).

import { matches, type Filter, type TagState } from "./uns";

export interface PlantNode {
  name: string;
  path: string;
  level: number; // -1 the root, 0 enterprise .. 4 device, 5 tag
  parent: PlantNode | null;
  children: PlantNode[]; // sorted by name (numbers in names compared as numbers)
  tag?: TagState; // a leaf's current state: its configured one with the newest live value over it
  config?: TagState; // a leaf's configured state, when it is configured
  tags: number; // leaves under it
  bad: number; // BAD leaves under it
  shown: number; // leaves under it the filter keeps (all of them without a filter)
  shownBad: number; // BAD leaves among those
}

const collator = new Intl.Collator(undefined, { numeric: true });

function node(name: string, path: string, level: number, parent: PlantNode | null): PlantNode {
  return { name, path, level, parent, children: [], tags: 0, bad: 0, shown: 0, shownBad: 0 };
}

/** Where `name` goes among `children` (sorted): binary search. */
function slot(children: PlantNode[], name: string): number {
  let lo = 0;
  let hi = children.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (collator.compare((children[mid] as PlantNode).name, name) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function merged(config: TagState | undefined, live: TagState): TagState {
  return config === undefined ? live : { ...config, ...live, unit: live.unit ?? config.unit };
}

export class PlantTree {
  readonly root: PlantNode = node("", "", -1, null);
  private readonly index = new Map<string, PlantNode>();
  private filter: Filter = { text: "", badOnly: false };
  /** Bumped whenever the visible rows may have changed (a path added or removed, a tag in or out of the
   *  filter): the page flattens again only then. */
  version = 0;

  get filtering(): boolean {
    return this.filter.text.trim() !== "" || this.filter.badOnly;
  }

  get(path: string): PlantNode | undefined {
    return this.index.get(path);
  }

  /** Nodes at each level 0..5 (how many rows a depth of opening shows). */
  levelCounts(): number[] {
    const out = [0, 0, 0, 0, 0, 0];
    const walk = (n: PlantNode): void => {
      for (const c of n.children) {
        out[c.level] = (out[c.level] ?? 0) + 1;
        if (c.level < 4) walk(c);
        else if (c.level === 4) out[5] = (out[5] ?? 0) + c.children.length;
      }
    };
    walk(this.root);
    return out;
  }

  /** The configured tags (a device list loaded): the structure is rebuilt, live values seen so far kept. */
  setConfigured(configured: Iterable<TagState>): void {
    const live = new Map<string, TagState>();
    for (const leaf of this.index.values()) if (leaf.level === 5 && leaf.tag !== leaf.config) live.set(leaf.path, leaf.tag as TagState);
    this.index.clear();
    this.root.children = [];
    this.root.tags = this.root.bad = this.root.shown = this.root.shownBad = 0;
    const configs = new Map<string, TagState>();
    for (const t of configured) configs.set(t.path, t);
    for (const [path, t] of configs) this.attach(path, t, live.get(path));
    for (const [path, t] of live) if (!configs.has(path)) this.attach(path, undefined, t);
    const sort = (n: PlantNode): void => {
      n.children.sort((a, b) => collator.compare(a.name, b.name));
      if (n.level < 4) for (const c of n.children) sort(c);
    };
    sort(this.root);
    this.version++;
  }

  /** Live values (and removals) as they arrive; the counts of their ancestors follow. */
  apply(values: Iterable<TagState | { path: string; removed: true }>): void {
    for (const v of values) {
      const leaf = this.index.get(v.path);
      if ("removed" in v) {
        if (leaf === undefined) continue;
        if (leaf.config !== undefined) this.update(leaf, leaf.config);
        else this.detach(leaf);
      } else if (leaf !== undefined) {
        this.update(leaf, merged(leaf.config, v));
      } else if (v.path.split("/").length === 6) {
        this.insert(v);
      }
    }
  }

  /** A new filter: every leaf is matched again (once per change of the filter, not per value). */
  setFilter(f: Filter): void {
    if (f.text === this.filter.text && f.badOnly === this.filter.badOnly) return;
    this.filter = { text: f.text, badOnly: f.badOnly };
    const count = (n: PlantNode): void => {
      if (n.level === 5) {
        const m = this.matches(n);
        n.shown = m ? 1 : 0;
        n.shownBad = m && n.tag?.quality === "bad" ? 1 : 0;
        return;
      }
      n.shown = n.shownBad = 0;
      for (const c of n.children) {
        count(c);
        n.shown += c.shown;
        n.shownBad += c.shownBad;
      }
    };
    count(this.root);
    this.version++;
  }

  private matches(leaf: PlantNode): boolean {
    return !this.filtering || matches(leaf.tag as TagState, this.filter);
  }

  /** A leaf and the branches to it, unsorted (setConfigured sorts once) and without bumping the version. */
  private attach(path: string, config: TagState | undefined, live: TagState | undefined): void {
    const parts = path.split("/");
    if (parts.length !== 6) return;
    let parent = this.root;
    for (let i = 0; i < 5; i++) {
      const p = parts.slice(0, i + 1).join("/");
      let n = this.index.get(p);
      if (n === undefined) {
        n = node(parts[i] as string, p, i, parent);
        this.index.set(p, n);
        parent.children.push(n);
      }
      parent = n;
    }
    if (this.index.has(path)) return;
    const leaf = node(parts[5] as string, path, 5, parent);
    leaf.config = config;
    leaf.tag = live === undefined ? config : merged(config, live);
    parent.children.push(leaf);
    this.index.set(path, leaf);
    this.count(leaf, 1);
  }

  /** A tag first seen live: into its place among its siblings (binary search), no sort of anything else. */
  private insert(t: TagState): void {
    const parts = t.path.split("/");
    let parent = this.root;
    for (let i = 0; i < 6; i++) {
      const p = i === 5 ? t.path : parts.slice(0, i + 1).join("/");
      let n = this.index.get(p);
      if (n === undefined) {
        const name = parts[i] as string;
        n = node(name, p, i, parent);
        parent.children.splice(slot(parent.children, name), 0, n);
        this.index.set(p, n);
      }
      parent = n;
    }
    parent.tag = t;
    this.count(parent, 1);
    this.version++;
  }

  /** A live-only tag removed: out of its parent, and branches left empty with it. */
  private detach(leaf: PlantNode): void {
    this.count(leaf, -1);
    let n: PlantNode = leaf;
    while (n.parent !== null && (n.level === 5 || n.tags === 0)) {
      const siblings = n.parent.children;
      siblings.splice(siblings.indexOf(n), 1);
      this.index.delete(n.path);
      n = n.parent;
    }
    this.version++;
  }

  /** Add (`sign` 1) or take away (-1) a leaf's counts on it and every ancestor. */
  private count(leaf: PlantNode, sign: 1 | -1): void {
    const bad = leaf.tag?.quality === "bad" ? sign : 0;
    const shown = this.matches(leaf) ? sign : 0;
    const shownBad = shown !== 0 ? bad : 0;
    for (let n: PlantNode | null = leaf.parent; n !== null; n = n.parent) {
      n.tags += sign;
      n.bad += bad;
      n.shown += shown;
      n.shownBad += shownBad;
    }
    // a leaf's own counts are 0 or 1: what its ancestors were given for it
    leaf.tags = sign === 1 ? 1 : 0;
    leaf.bad = bad === 1 ? 1 : 0;
    leaf.shown = shown === 1 ? 1 : 0;
    leaf.shownBad = shownBad === 1 ? 1 : 0;
  }

  /** A known leaf's new state: six steps up when its badness or its match changed, none otherwise. */
  private update(leaf: PlantNode, t: TagState): void {
    const wasBad = leaf.bad;
    const wasShown = leaf.shown;
    const wasShownBad = leaf.shownBad;
    leaf.tag = t;
    const bad = t.quality === "bad" ? 1 : 0;
    const shown = this.matches(leaf) ? 1 : 0;
    const shownBad = shown && bad;
    if (bad === wasBad && shown === wasShown && shownBad === wasShownBad) return;
    leaf.bad = bad;
    leaf.shown = shown;
    leaf.shownBad = shownBad;
    for (let n: PlantNode | null = leaf.parent; n !== null; n = n.parent) {
      n.bad += bad - wasBad;
      n.shown += shown - wasShown;
      n.shownBad += shownBad - wasShownBad;
    }
    if (shown !== wasShown) this.version++;
  }
}

/** Which branches are open: those above level `depth`, except the paths in `flipped` (toggled by hand). */
export interface Expansion {
  depth: number; // 0: all closed .. 5: every branch open (tags shown)
  flipped: ReadonlySet<string>;
}

export const ALL_OPEN: Expansion = { depth: 5, flipped: new Set() };
export const ALL_CLOSED: Expansion = { depth: 0, flipped: new Set() };

export function isOpen(e: Expansion, n: PlantNode): boolean {
  return n.level < 5 && (n.level < e.depth) !== e.flipped.has(n.path);
}

export function toggled(e: Expansion, n: PlantNode): Expansion {
  const flipped = new Set(e.flipped);
  if (!flipped.delete(n.path)) flipped.add(n.path);
  return { depth: e.depth, flipped };
}

export function withOpen(e: Expansion, n: PlantNode, open: boolean): Expansion {
  return isOpen(e, n) === open ? e : toggled(e, n);
}

/** How a plant opens: fully up to `small` tags (as it always did), else the deepest level at which no more
 *  than `rows` rows show (at least the enterprises). */
export function defaultDepth(tree: PlantTree, small = 500, rows = 300): number {
  if (tree.root.tags <= small) return 5;
  const counts = tree.levelCounts();
  let total = 0;
  let depth = 0;
  for (let level = 0; level < 5; level++) {
    total += counts[level] ?? 0;
    const next = total + (counts[level + 1] ?? 0); // the rows once `level` is open too
    if (next > rows) break;
    depth = level + 1;
  }
  return depth;
}

export interface Row {
  node: PlantNode;
  open: boolean; // a branch shown open
  pos: number; // 1-based place among its shown siblings (aria-posinset)
  of: number; // its shown siblings (aria-setsize)
}

/** The visible rows in order: each shown node, and the children of the open ones. Costs the rows it
 *  returns (and the siblings it skips under a filter), never the tags under closed branches. */
export function flatten(tree: PlantTree, e: Expansion): Row[] {
  const out: Row[] = [];
  const filtering = tree.filtering;
  const walk = (n: PlantNode): void => {
    const kids = filtering ? n.children.filter((c) => c.shown > 0) : n.children;
    let pos = 0;
    for (const c of kids) {
      const open = isOpen(e, c);
      out.push({ node: c, open, pos: ++pos, of: kids.length });
      if (open) walk(c);
    }
  };
  walk(tree.root);
  return out;
}

export interface ViewWindow {
  start: number; // first row rendered
  end: number; // one past the last
  before: number; // px of the spacer above
  after: number; // px of the spacer below
}

/** The rows to render for a viewport over `count` rows of `rowHeight` px: those in view plus `overscan`
 *  either side; `offset` px of other content (a header) above the first row. */
export function viewWindow(scrollTop: number, height: number, count: number, rowHeight: number, overscan = 8,
  offset = 0): ViewWindow {
  const top = Math.max(0, scrollTop - offset);
  const first = Math.min(count, Math.floor(top / rowHeight));
  const last = Math.min(count, Math.ceil((top + Math.max(0, height)) / rowHeight));
  const start = Math.max(0, first - overscan);
  const end = Math.min(count, last + overscan);
  return { start, end, before: start * rowHeight, after: (count - end) * rowHeight };
}

/** The scrollTop that brings row `index` fully into a viewport of `height` px (unchanged when it is). */
export function scrollToRow(index: number, scrollTop: number, height: number, rowHeight: number, offset = 0): number {
  const top = offset + index * rowHeight;
  if (top - offset < scrollTop) return Math.max(0, top - offset); // under the sticky header: up to it
  if (top + rowHeight > scrollTop + height) return top + rowHeight - height;
  return scrollTop;
}
