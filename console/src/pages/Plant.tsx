// The plant: the UNS tree of every configured tag and every tag the live stream knows, with value, unit,
// quality (colour, reason on hover) and age; a text filter and "bad only". Virtualised for plants of tens of
// thousands of tags: one table (a treegrid) of the visible rows, of which only those in the scroll viewport
// (and a few either side) are in the DOM; the tree is kept in place and live values update it (tree.ts).

import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";

import { allDevices, unsPath, type DeviceOut } from "../api";
import { ErrorBox, LiveStatus, Page, QualityBadge, tagOfLive, useLiveStream, useLoad, useNow } from "../hooks";
import type { LiveState } from "../live";
import { href } from "../router";
import {
  ALL_CLOSED, ALL_OPEN, defaultDepth, flatten, PlantTree, scrollToRow, toggled, viewWindow, withOpen,
  type Expansion, type PlantNode, type Row,
} from "../tree";
import { coverPaths, formatAge, formatValue, LEVELS, type TagState } from "../uns";

/** px of every row (and of the header): style.css `.plant-tree` keeps them so. */
export const ROW = 34;
const OVERSCAN = 10;

export function configuredTags(devices: DeviceOut[]): TagState[] {
  const out: TagState[] = [];
  for (const d of devices) {
    const base = unsPath(d.device);
    for (const t of d.device.tags ?? []) out.push({ path: `${base}/${t.name}`, unit: t.unit, quality: "none" });
  }
  return out;
}

/** The live values of `paths` (subtrees) into `tree` as they arrive; one render per animation frame. */
function useLiveTree(tree: PlantTree, paths: string[]): { state: LiveState; why: string } {
  return useLiveStream(paths, tree, (values) => tree.apply(values.map(tagOfLive)));
}

const indent = (level: number) => ({ paddingLeft: `${0.5 + level * 1.1}rem` });

interface RowProps {
  row: Row;
  index: number;
  filtering: boolean;
  now: number;
  onToggle: (n: PlantNode) => void;
}

function aria(row: Row, index: number) {
  return { "aria-level": row.node.level + 1, "aria-posinset": row.pos, "aria-setsize": row.of, "aria-rowindex": index + 2, "data-index": index };
}

function TagRow({ row, index, now }: RowProps) {
  const n = row.node;
  const t = n.tag as TagState;
  return (
    <tr data-path={t.path} class={`tag tag-${t.quality}`} {...aria(row, index)}>
      <th scope="row" style={indent(n.level)} tabIndex={-1} data-focus title={n.name}>
        {n.name}
      </th>
      <td class="value" data-value>
        {formatValue(t.value)}
      </td>
      <td class="unit">{t.unit ?? ""}</td>
      <td>
        <QualityBadge tag={t} />
      </td>
      <td class="age" title={t.ts ? new Date(t.ts).toISOString() : undefined}>
        {formatAge(t.ts, now)}
      </td>
    </tr>
  );
}

function BranchRow({ row, index, filtering, onToggle }: RowProps) {
  const n = row.node;
  const tags = filtering ? n.shown : n.tags;
  const bad = filtering ? n.shownBad : n.bad;
  const device = n.level === 4;
  return (
    <tr class={`branch level-${n.level}`} aria-expanded={row.open} {...aria(row, index)}>
      <td colSpan={5} style={indent(n.level)}>
        <div class="branch-cell">
          {/* a <details> for its native disclosure (Enter and Space, its open state to assistive technology);
              what it discloses are the rows after it, so the click only asks the page to open or close it */}
          <details open={row.open} class={device ? "device" : `branch level-${n.level}`} data-path={n.path}>
            <summary data-focus onClick={(e) => (e.preventDefault(), onToggle(n))}>
              <span class="level">{LEVELS[n.level] ?? ""}</span> <span class="name">{n.name}</span>{" "}
              <span class="count">
                {tags} tag{tags === 1 ? "" : "s"}
                {bad ? <span class="bad-count"> · {bad} bad</span> : null}
              </span>
            </summary>
          </details>
          {device ? (
            <span class="device-links">
              <a href={href("devices", n.name)}>device page</a> · <a href={`/trends?prefix=${encodeURIComponent(n.path)}`}>trend</a>
            </span>
          ) : null}
        </div>
      </td>
    </tr>
  );
}

const NONE: ReadonlySet<string> = new Set();

export function Plant() {
  const devices = useLoad((signal) => allDevices(signal), []);
  const tree = useMemo(() => new PlantTree(), []);
  const loaded = useRef<DeviceOut[] | undefined>(undefined);
  if (devices.data !== undefined && loaded.current !== devices.data) {
    loaded.current = devices.data;
    tree.setConfigured(configuredTags(devices.data));
  }
  const roots = useMemo(() => coverPaths((devices.data ?? []).map((d) => unsPath(d.device))), [devices.data]);
  const live = useLiveTree(tree, roots);
  const now = useNow();
  const [text, setText] = useState("");
  const [badOnly, setBadOnly] = useState(false);
  tree.setFilter({ text, badOnly }); // nothing to do unless the filter changed
  const filtering = tree.filtering;

  // what is open: chosen by hand (null: the default for the plant's size), and, while a filter is on, every
  // branch leading to a match until one is closed by hand (forgotten when the filter changes)
  const [picked, setPicked] = useState<Expansion | null>(null);
  const filterKey = `${text}\n${badOnly}`;
  const [whileFiltering, setWhileFiltering] = useState<{ key: string; e: Expansion }>({ key: "", e: ALL_OPEN });
  const depth = useMemo(() => defaultDepth(tree), [tree, tree.version]);
  const auto = useMemo<Expansion>(() => ({ depth, flipped: NONE }), [depth]);
  const expansion = filtering ? (whileFiltering.key === filterKey ? whileFiltering.e : ALL_OPEN) : picked ?? auto;
  const setExpansion = (e: Expansion): void => (filtering ? setWhileFiltering({ key: filterKey, e }) : setPicked(e));
  const rows = useMemo(() => flatten(tree, expansion), [tree, tree.version, expansion]);

  // the viewport over the rows
  const box = useRef<HTMLDivElement>(null);
  const [view, setView] = useState({ top: 0, height: 20 * ROW });
  const pendingFocus = useRef<number | null>(null);
  const measure = (): void => {
    const el = box.current;
    if (el) setView({ top: el.scrollTop, height: el.clientHeight });
  };
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    let frame = 0;
    const onScroll = (): void => {
      if (!frame) frame = requestAnimationFrame(() => ((frame = 0), measure()));
    };
    const ro = new ResizeObserver(onScroll);
    ro.observe(el);
    el.addEventListener("scroll", onScroll, { passive: true });
    measure();
    return () => {
      ro.disconnect();
      el.removeEventListener("scroll", onScroll);
      cancelAnimationFrame(frame);
    };
  }, [rows.length > 0]);
  useEffect(() => {
    if (box.current) box.current.scrollTop = 0; // a new filter: its first matches
  }, [filterKey]);
  useLayoutEffect(() => {
    if (pendingFocus.current === null) return;
    const el = box.current?.querySelector<HTMLElement>(`tr[data-index="${pendingFocus.current}"] [data-focus]`);
    if (el) {
      el.focus({ preventScroll: true });
      pendingFocus.current = null;
    }
  });
  const win = viewWindow(view.top, view.height, rows.length, ROW, OVERSCAN, ROW);

  const toggle = (n: PlantNode): void => setExpansion(toggled(expansion, n));
  const focusRow = (i: number): void => {
    const el = box.current;
    if (!el || !rows.length) return;
    const j = Math.max(0, Math.min(rows.length - 1, i));
    const top = scrollToRow(j, el.scrollTop, el.clientHeight, ROW, ROW);
    if (top !== el.scrollTop) el.scrollTop = top;
    pendingFocus.current = j;
    setView({ top, height: el.clientHeight }); // renders row j if it was not, then focuses it
  };
  // the keys of a tree (WAI-ARIA treegrid): up/down a row, right opens (or goes to the first child), left
  // closes (or goes to the parent), Home/End; Enter and Space are the <summary>'s own
  const onKeyDown = (e: KeyboardEvent): void => {
    const tr = (e.target as Element).closest<HTMLElement>("tr[data-index]");
    if (!tr) return;
    const i = Number(tr.dataset.index);
    const r = rows[i];
    if (r === undefined) return;
    const branch = r.node.level < 5;
    let handled = true;
    if (e.key === "ArrowDown") focusRow(i + 1);
    else if (e.key === "ArrowUp") focusRow(i - 1);
    else if (e.key === "Home") focusRow(0);
    else if (e.key === "End") focusRow(rows.length - 1);
    else if (e.key === "ArrowRight" && branch) {
      if (r.open) focusRow(i + 1);
      else setExpansion(withOpen(expansion, r.node, true));
    } else if (e.key === "ArrowLeft") {
      if (branch && r.open) setExpansion(withOpen(expansion, r.node, false));
      else {
        let p = i - 1;
        while (p >= 0 && rows[p]?.node !== r.node.parent) p--;
        if (p >= 0) focusRow(p);
      }
    } else handled = false;
    if (handled) e.preventDefault();
  };

  const root = tree.root;
  return (
    <Page title="Plant" actions={<LiveStatus state={live.state} why={live.why} />}>
      <form class="filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <label>
          Filter
          <input type="search" name="filter" placeholder="e.g. press temp" value={text}
            onInput={(e) => setText(e.currentTarget.value)} />
        </label>
        <label class="check">
          <input type="checkbox" name="bad-only" checked={badOnly} onChange={(e) => setBadOnly(e.currentTarget.checked)} />
          Bad only
        </label>
        <span class="tree-buttons">
          <button type="button" onClick={() => setExpansion(ALL_OPEN)}>Expand all</button>
          <button type="button" onClick={() => setExpansion(ALL_CLOSED)}>Collapse all</button>
        </span>
        <span class="summary" aria-live="polite">
          {root.shown} of {root.tags} tags shown · {root.bad} bad
        </span>
      </form>
      <ErrorBox error={devices.error} />
      {devices.loading && !devices.data ? <p>Loading…</p> : null}
      {rows.length ? (
        <div class="plant-tree" ref={box}>
          <table role="treegrid" aria-label="Plant tree" aria-rowcount={rows.length + 1} data-rows={rows.length}>
            <colgroup>
              <col class="c-name" />
              <col class="c-value" />
              <col class="c-unit" />
              <col class="c-quality" />
              <col class="c-age" />
            </colgroup>
            <thead>
              <tr aria-rowindex={1}>
                <th scope="col">name</th>
                <th scope="col">value</th>
                <th scope="col">unit</th>
                <th scope="col">quality</th>
                <th scope="col">age</th>
              </tr>
            </thead>
            <tbody onKeyDown={onKeyDown}>
              {win.before ? (
                <tr class="spacer" aria-hidden="true" key="before" style={{ height: `${win.before}px` }}>
                  <td colSpan={5} />
                </tr>
              ) : null}
              {rows.slice(win.start, win.end).map((r, k) => {
                const Kind = r.node.level === 5 ? TagRow : BranchRow;
                return <Kind row={r} index={win.start + k} filtering={filtering} now={now} onToggle={toggle} key={r.node.path} />;
              })}
              {win.after ? (
                <tr class="spacer" aria-hidden="true" key="after" style={{ height: `${win.after}px` }}>
                  <td colSpan={5} />
                </tr>
              ) : null}
            </tbody>
          </table>
        </div>
      ) : devices.data ? (
        <p class="empty">{filtering ? "No tag matches." : "No tags yet: add a device under Devices."}</p>
      ) : null}
    </Page>
  );
}
