// The plant as a tree (enterprise → site → area → line → device → tag), built from the configured devices and
// the live values, and the rules the pages show it by: filter, "bad only", quality, value and age text.
// Pure functions, tested by vitest (uns.test.ts).

export const LEVELS = ["enterprise", "site", "area", "line", "device", "tag"] as const;

export type Quality = "good" | "uncertain" | "bad" | "none";

export interface TagState {
  path: string; // six levels
  value?: unknown;
  unit?: string;
  quality: Quality; // "none": configured, no value seen yet
  reason?: string;
  q?: number;
  ts?: number; // ms since the epoch, the reading's time
}

export interface TreeNode {
  name: string;
  path: string;
  level: number; // 0 enterprise .. 5 tag
  children: TreeNode[];
  tag?: TagState; // the leaves
  tags: number; // leaves under it
  bad: number; // BAD leaves under it
}

/** The quality a status code stands for (OPC UA: its top two bits). */
export function qualityOfStatus(q: number | undefined): Quality {
  if (q === undefined) return "none";
  const top = Math.floor(q / 0x40000000) & 3;
  return top === 0 ? "good" : top === 1 ? "uncertain" : "bad";
}

export function buildTree(tags: Iterable<TagState>): TreeNode {
  const root: TreeNode = { name: "", path: "", level: -1, children: [], tags: 0, bad: 0 };
  const index = new Map<string, TreeNode>();
  for (const t of tags) {
    const parts = t.path.split("/");
    if (parts.length !== 6) continue;
    let node = root;
    const chain: TreeNode[] = [root];
    for (let i = 0; i < 6; i++) {
      const path = parts.slice(0, i + 1).join("/");
      let child = index.get(path);
      if (child === undefined) {
        child = { name: parts[i] ?? "", path, level: i, children: [], tags: 0, bad: 0 };
        index.set(path, child);
        node.children.push(child);
      }
      node = child;
      chain.push(node);
    }
    node.tag = t;
    for (const n of chain) {
      n.tags += 1;
      if (t.quality === "bad") n.bad += 1;
    }
  }
  sortTree(root);
  return root;
}

function sortTree(n: TreeNode): void {
  n.children.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  for (const c of n.children) sortTree(c);
}

export interface Filter {
  text: string; // words, all of which must be in the tag's path (or its unit / reason)
  badOnly: boolean;
}

export function matches(t: TagState, f: Filter): boolean {
  if (f.badOnly && t.quality !== "bad") return false;
  const words = f.text.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return true;
  const hay = `${t.path} ${t.unit ?? ""} ${t.reason ?? ""}`.toLowerCase();
  return words.every((w) => hay.includes(w));
}

/** The tree with only the leaves that match, and the branches that lead to them; null when none does. */
export function filterTree(n: TreeNode, f: Filter): TreeNode | null {
  if (n.tag !== undefined) return matches(n.tag, f) ? n : null;
  const children = n.children.map((c) => filterTree(c, f)).filter((c): c is TreeNode => c !== null);
  if (!children.length && n.level >= 0) return null;
  const tags = children.reduce((s, c) => s + c.tags, 0);
  const bad = children.reduce((s, c) => s + c.bad, 0);
  return { ...n, children, tags, bad };
}

export function formatValue(v: unknown): string {
  if (v === undefined || v === null) return "—";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a < 0.001 || a >= 1e9) ? v.toExponential(3) : String(Number(v.toPrecision(6)));
  }
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "object" && v !== null && "datetime" in v) {
    const ms = (v as { datetime: unknown }).datetime;
    return typeof ms === "number" ? new Date(ms).toISOString() : String(ms);
  }
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** "3 s", "4 min", "2 h", "5 d": how long ago `ts` was. */
export function formatAge(ts: number | undefined, now: number): string {
  if (ts === undefined) return "—";
  const s = Math.max(0, (now - ts) / 1000);
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

/** What the quality badge says on hover: the quality, its reason and the status code. */
export function qualityTitle(t: TagState): string {
  if (t.quality === "none") return "no value received yet";
  const code = t.q === undefined ? "" : ` (status 0x${t.q.toString(16).toUpperCase().padStart(8, "0")})`;
  return `${t.quality}${t.reason ? `: ${t.reason}` : ""}${code}`;
}

/** The shortest set of subtrees (at most `max`) covering every path: what the live stream is asked for. */
export function coverPaths(paths: Iterable<string>, max = 16): string[] {
  let set = [...new Set(paths)].sort();
  for (let depth = 6; depth >= 1; depth--) {
    const cut = [...new Set(set.map((p) => p.split("/").slice(0, depth).join("/")))];
    // drop a path that lies under another
    const pruned = cut.filter((p) => !cut.some((o) => o !== p && p.startsWith(`${o}/`)));
    if (pruned.length <= max) return pruned.sort();
    set = pruned;
  }
  return set.slice(0, max);
}
