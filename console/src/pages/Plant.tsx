// The plant: the UNS tree of every configured tag and every tag the live stream knows, with value, unit,
// quality (colour, reason on hover) and age; a text filter and "bad only".

import { useMemo, useState } from "preact/hooks";

import { allDevices, unsPath, type DeviceOut } from "../api";
import { ErrorBox, LiveStatus, Page, QualityBadge, useLive, useLoad, useNow } from "../hooks";
import { href } from "../router";
import { buildTree, coverPaths, filterTree, formatAge, formatValue, LEVELS, type TagState, type TreeNode } from "../uns";

export function configuredTags(devices: DeviceOut[]): TagState[] {
  const out: TagState[] = [];
  for (const d of devices) {
    const base = unsPath(d.device);
    for (const t of d.device.tags ?? []) out.push({ path: `${base}/${t.name}`, unit: t.unit, quality: "none" });
  }
  return out;
}

export function mergeLive(configured: TagState[], live: Map<string, TagState>): TagState[] {
  const byPath = new Map(configured.map((t) => [t.path, t]));
  for (const [path, v] of live) byPath.set(path, { ...byPath.get(path), ...v, unit: v.unit ?? byPath.get(path)?.unit });
  return [...byPath.values()];
}

function TagRow({ node, now }: { node: TreeNode; now: number }) {
  const t = node.tag as TagState;
  return (
    <tr data-path={t.path} class={`tag tag-${t.quality}`}>
      <th scope="row">{node.name}</th>
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

function Branch({ node, open, now }: { node: TreeNode; open: boolean; now: number }) {
  const level = LEVELS[node.level] ?? "";
  const summary = (
    <summary>
      <span class="level">{level}</span> <span class="name">{node.name}</span>{" "}
      <span class="count">
        {node.tags} tag{node.tags === 1 ? "" : "s"}
        {node.bad ? <span class="bad-count"> · {node.bad} bad</span> : null}
      </span>
    </summary>
  );
  if (node.level === 4) {
    const id = node.name;
    return (
      <details open={open} class="device" data-path={node.path}>
        {summary}
        <p class="device-links">
          <a href={href("devices", id)}>device page</a> · <a href={`/trends?prefix=${encodeURIComponent(node.path)}`}>trend</a>
        </p>
        <table class="tags">
          <thead>
            <tr>
              <th scope="col">tag</th>
              <th scope="col">value</th>
              <th scope="col">unit</th>
              <th scope="col">quality</th>
              <th scope="col">age</th>
            </tr>
          </thead>
          <tbody>
            {node.children.map((c) => (
              <TagRow node={c} now={now} key={c.path} />
            ))}
          </tbody>
        </table>
      </details>
    );
  }
  return (
    <details open={open} class={`branch level-${node.level}`} data-path={node.path}>
      {summary}
      <div class="children">
        {node.children.map((c) => (
          <Branch node={c} open={open} now={now} key={c.path} />
        ))}
      </div>
    </details>
  );
}

export function Plant() {
  const devices = useLoad((signal) => allDevices(signal), []);
  const configured = useMemo(() => configuredTags(devices.data ?? []), [devices.data]);
  const roots = useMemo(() => coverPaths((devices.data ?? []).map((d) => unsPath(d.device))), [devices.data]);
  const live = useLive(roots);
  const now = useNow();
  const [text, setText] = useState("");
  const [badOnly, setBadOnly] = useState(false);
  const all = mergeLive(configured, live.values);
  const tree = buildTree(all);
  const shown = filterTree(tree, { text, badOnly });
  const filtering = text !== "" || badOnly;
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
        <span class="summary" aria-live="polite">
          {shown?.tags ?? 0} of {tree.tags} tags shown · {tree.bad} bad
        </span>
      </form>
      <ErrorBox error={devices.error} />
      {devices.loading && !devices.data ? <p>Loading…</p> : null}
      {shown && shown.children.length ? (
        <div class="tree">
          {shown.children.map((c) => (
            <Branch node={c} open={filtering || tree.tags <= 500} now={now} key={c.path} />
          ))}
        </div>
      ) : devices.data ? (
        <p class="empty">{filtering ? "No tag matches." : "No tags yet: add a device under Devices."}</p>
      ) : null}
    </Page>
  );
}
