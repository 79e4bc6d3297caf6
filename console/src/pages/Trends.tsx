// Trends: one or several tags (or every tag under a device or line) over a chosen range, from the history
// API's buckets (its aggregate layers answer whole minutes and hours). Drag across the chart to zoom in; the
// buttons pan, zoom out and pick a range (keyboard-usable). The range and tags are in the URL.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";

import { allDevices, get, query, unsPath } from "../api";
import { ErrorBox, Page, useLoad } from "../hooks";
import type { Route } from "../router";
import { navigate } from "../router";
import { align, bucketFor, compact, fromLocalInput, seriesOf, shortNames, toLocalInput, type HistoryAnswer } from "../trend";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const PRESETS: [string, number][] = [["15 min", 900_000], ["1 h", 3_600_000], ["6 h", 21_600_000], ["24 h", 86_400_000], ["7 d", 604_800_000]];

function goTo(tags: string[], prefix: string, from: number, to: number): void {
  navigate(`/trends${query({ tag: tags, prefix, from: new Date(from).toISOString(), to: new Date(to).toISOString() })}`);
}

export function Trends({ route }: { route: Route }) {
  const tags = route.params.getAll("tag");
  const prefix = route.params.get("prefix") ?? "";
  // without a range in the URL: the last hour, fixed when the URL was opened (not at every render)
  const search = route.params.toString();
  const [from, to] = useMemo(() => {
    const end = Date.parse(route.params.get("to") ?? "") || Date.now();
    return [Date.parse(route.params.get("from") ?? "") || end - 3_600_000, end];
  }, [search]);
  const bucket = bucketFor(from, to);
  const wanted = tags.length > 0 || prefix !== "";
  const devices = useLoad((signal) => allDevices(signal), []);
  const data = useLoad(
    (signal) => wanted
      ? get<HistoryAnswer>(`/history${query({ tag: tags, prefix: tags.length ? undefined : prefix, from: new Date(from).toISOString(), to: new Date(to).toISOString(), bucket, stats: "avg,min,max" })}`, signal)
      : Promise.resolve(null),
    [tags.join("\n"), prefix, from, to],
  );
  const [add, setAdd] = useState("");
  const chartEl = useRef<HTMLDivElement>(null);
  const series = data.data ? seriesOf(data.data) : [];

  useEffect(() => {
    const el = chartEl.current;
    if (!el || !series.length) return;
    const names = shortNames(series.map((s) => s.tag));
    const opts: uPlot.Options = {
      width: Math.max(320, el.clientWidth),
      height: 360,
      scales: { x: { time: true, min: from / 1000, max: to / 1000 } },
      series: [{}, ...series.map((s, i) => ({ label: `${names[i]}${s.unit ? ` (${s.unit})` : ""}`, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false }))],
      axes: [{}, { size: 64, values: (_u: uPlot, vals: number[]) => vals.map(compact) }],
      cursor: { drag: { x: true, y: false } },
      hooks: {
        setSelect: [(u: uPlot) => {
          if (u.select.width < 5) return;
          const a = u.posToVal(u.select.left, "x") * 1000;
          const b = u.posToVal(u.select.left + u.select.width, "x") * 1000;
          goTo(tags, prefix, Math.round(a), Math.round(b));
        }],
      },
    };
    const plot = new uPlot(opts, align(series) as uPlot.AlignedData, el);
    const resize = (): void => plot.setSize({ width: Math.max(320, el.clientWidth), height: 360 });
    window.addEventListener("resize", resize);
    return () => {
      window.removeEventListener("resize", resize);
      plot.destroy();
    };
  }, [data.data]);

  const span = to - from;
  const choices = (devices.data ?? []).flatMap((d) => (d.device.tags ?? []).map((t) => `${unsPath(d.device)}/${t.name}`));
  const points = series.reduce((n, s) => n + (s.buckets?.length ?? 0), 0);
  return (
    <Page title="Trends">
      <form class="filters" onSubmit={(e) => {
        e.preventDefault();
        if (add.trim()) goTo([...tags, add.trim()], "", from, to);
        setAdd("");
      }}>
        <label>
          Add a tag
          <input name="tag" list="tag-choices" value={add} size={50} placeholder="enterprise/site/area/line/device/tag"
            onInput={(e) => setAdd(e.currentTarget.value)} />
        </label>
        <datalist id="tag-choices">
          {choices.map((c) => <option value={c} key={c} />)}
        </datalist>
        <button type="submit">Add</button>
      </form>
      <p class="chips">
        {prefix && !tags.length ? <span class="chip">every tag under {prefix}</span> : null}
        {tags.map((t) => (
          <span class="chip" key={t}>
            {t}{" "}
            <button type="button" aria-label={`remove ${t}`} onClick={() => goTo(tags.filter((x) => x !== t), prefix, from, to)}>×</button>
          </span>
        ))}
      </p>
      <form class="range" onSubmit={(e) => e.preventDefault()}>
        {PRESETS.map(([label, ms]) => (
          <button type="button" key={label} onClick={() => goTo(tags, prefix, Date.now() - ms, Date.now())}>last {label}</button>
        ))}
        <button type="button" onClick={() => goTo(tags, prefix, from - span / 2, to - span / 2)}>◀ earlier</button>
        <button type="button" onClick={() => goTo(tags, prefix, from + span / 2, to + span / 2)}>later ▶</button>
        <button type="button" onClick={() => goTo(tags, prefix, from + span / 4, to - span / 4)}>zoom in</button>
        <button type="button" onClick={() => goTo(tags, prefix, from - span / 2, to + span / 2)}>zoom out</button>
        <label>
          from
          <input type="datetime-local" name="from" value={toLocalInput(from)}
            onChange={(e) => { const v = fromLocalInput(e.currentTarget.value); if (v !== null && v < to) goTo(tags, prefix, v, to); }} />
        </label>
        <label>
          to
          <input type="datetime-local" name="to" value={toLocalInput(to)}
            onChange={(e) => { const v = fromLocalInput(e.currentTarget.value); if (v !== null && v > from) goTo(tags, prefix, from, v); }} />
        </label>
      </form>
      <ErrorBox error={data.error} />
      {!wanted ? <p class="empty">Add a tag (or open a trend from a device in the plant) to draw it.</p> : null}
      {wanted && data.data ? (
        <p class="summary" data-points={points}>
          {series.length} series, {points} buckets of {bucket} (average per bucket; layer {data.data.layer ?? "raw"})
        </p>
      ) : null}
      <div class="chart" ref={chartEl} aria-label="trend chart" role="img" />
    </Page>
  );
}
