// Alarms (the gateways' edge alarms, stored by ingestion: GET /history/alarms): active ones and their history
// under a UNS path, over a range. Acknowledging is not in the API yet.

import { useState } from "preact/hooks";

import { allDevices, ApiError, get, query } from "../api";
import { ErrorBox, Page, useLoad, useNow } from "../hooks";
import type { Route } from "../router";
import { navigate } from "../router";
import { formatAge, formatValue } from "../uns";

interface AlarmRow {
  tag: string;
  alarm: string;
  raised_at: string | null;
  cleared_at: string | null;
  active: boolean;
  raised_value: number | null;
  raised_limit: number | null;
  severity: number | null;
  cleared_value: number | null;
}

const RANGES: [string, number][] = [["1 h", 3_600_000], ["24 h", 86_400_000], ["7 d", 604_800_000]];

export function Alarms({ route }: { route: Route }) {
  const path = route.params.get("path") ?? "";
  const activeOnly = route.params.get("active") === "true";
  const span = Number(route.params.get("span") ?? 86_400_000) || 86_400_000;
  const [text, setText] = useState(path);
  const now = useNow(5000);
  const list = useLoad(async (signal) => {
    // every enterprise unless a path is given: the API answers one path (a prefix) at a time
    const roots = path ? [path] : [...new Set((await allDevices(signal)).map((d) => d.device.enterprise))];
    const out: AlarmRow[] = [];
    for (const root of roots) {
      try {
        const r = await get<{ alarms: AlarmRow[] }>(`/history/alarms${query({
          tag: root, from: new Date(Date.now() - span).toISOString(), active: activeOnly ? "true" : undefined })}`, signal);
        out.push(...r.alarms);
      } catch (exc) {
        if (!(exc instanceof ApiError && exc.status === 404)) throw exc; // no history under it (yet)
      }
    }
    return out.sort((a, b) => Number(b.active) - Number(a.active) || (b.raised_at ?? "").localeCompare(a.raised_at ?? ""));
  }, [path, activeOnly, span]);
  const go = (p: Record<string, string | undefined>): void =>
    navigate(`/alarms${query({ path, active: activeOnly ? "true" : undefined, span: String(span), ...p })}`);
  const rows = list.data ?? [];
  return (
    <Page title="Alarms" actions={<button type="button" onClick={list.reload}>Reload</button>}>
      <form class="filters" onSubmit={(e) => (e.preventDefault(), go({ path: text.trim() || undefined }))}>
        <label>
          Under (a UNS path; empty: everything)
          <input name="path" size={40} value={text} onInput={(e) => setText(e.currentTarget.value)} />
        </label>
        <button type="submit">Show</button>
        <label class="check">
          <input type="checkbox" name="active" checked={activeOnly} onChange={(e) => go({ active: e.currentTarget.checked ? "true" : undefined })} />
          Active only
        </label>
        {RANGES.map(([label, ms]) => (
          <button type="button" key={label} aria-pressed={span === ms} onClick={() => go({ span: String(ms) })}>last {label}</button>
        ))}
        <span class="summary">{rows.filter((a) => a.active).length} active, {rows.length} in range</span>
      </form>
      <ErrorBox error={list.error} />
      <table class="list alarms">
        <thead>
          <tr>
            <th scope="col">tag</th><th scope="col">alarm</th><th scope="col">state</th><th scope="col">raised</th>
            <th scope="col">value / limit</th><th scope="col">cleared</th><th scope="col">severity</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((a) => (
            <tr key={`${a.tag}|${a.alarm}|${a.raised_at ?? a.cleared_at}`} data-alarm={`${a.tag}|${a.alarm}`} class={a.active ? "tag-bad" : ""}>
              <th scope="row"><a href={`/trends${query({ tag: a.tag })}`}>{a.tag}</a></th>
              <td>{a.alarm}</td>
              <td><span class={`q q-${a.active ? "bad" : "good"}`}>{a.active ? "active" : "cleared"}</span></td>
              <td title={a.raised_at ?? undefined}>{a.raised_at ? `${formatAge(Date.parse(a.raised_at), now)} ago` : "—"}</td>
              <td>{formatValue(a.raised_value)} / {formatValue(a.raised_limit)}</td>
              <td title={a.cleared_at ?? undefined}>{a.cleared_at ? `${formatAge(Date.parse(a.cleared_at), now)} ago (${formatValue(a.cleared_value)})` : "—"}</td>
              <td>{a.severity ?? "—"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.data && !rows.length ? <p class="empty">No alarm in this range.</p> : null}
      <p class="muted">Acknowledging alarms is not in the API yet.</p>
    </Page>
  );
}
