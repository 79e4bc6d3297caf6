// Hooks and small components the pages share: data loading, the live values of some subtrees, a clock for
// ages, the quality badge, error banners.

import type { ComponentChildren } from "preact";
import { createContext } from "preact";
import { useCallback, useContext, useEffect, useRef, useState } from "preact/hooks";

import { ApiError } from "./api";
import type { Health, Live, LiveState, LiveValue } from "./live";
import type { TagState } from "./uns";
import { qualityOfStatus, qualityTitle } from "./uns";

export const LiveContext = createContext<Live | null>(null);

export interface Loaded<T> {
  data: T | undefined;
  error: ApiError | Error | undefined;
  loading: boolean;
  reload: () => void;
}

/** `load()` once and again on `reload()` or when `deps` change; aborted when the page goes away. */
export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: Error; loading: boolean }>({ loading: true });
  const [n, setN] = useState(0);
  useEffect(() => {
    const ctl = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    load(ctl.signal).then(
      (data) => !ctl.signal.aborted && setState({ data, loading: false }),
      (error: Error) => !ctl.signal.aborted && setState({ error, loading: false }),
    );
    return () => ctl.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, n]);
  const reload = useCallback(() => setN((x) => x + 1), []);
  return { data: state.data, error: state.error, loading: state.loading, reload };
}

/** A live value as the tree and the tables keep it (a removal as `removed`). */
export function tagOfLive(v: LiveValue): TagState | { path: string; removed: true } {
  if (v.removed) return { path: v.path, removed: true };
  return { path: v.path, value: v.value, unit: v.unit, q: v.q, ts: v.ts, reason: v.reason, quality: v.quality ?? qualityOfStatus(v.q) };
}

/** Watch `paths` (subtrees): every batch of live values goes to `apply`, the page renders once per animation
 *  frame after it; `target` is what `apply` writes into (a new one subscribes again). The stream's state. */
export function useLiveStream<T>(paths: string[], target: T, apply: (values: LiveValue[]) => void): { state: LiveState; why: string } {
  const live = useContext(LiveContext);
  const [, setTick] = useState(0);
  const [state, setState] = useState<{ s: LiveState; why: string }>({ s: live?.state ?? "closed", why: "" });
  const key = paths.join("\n");
  useEffect(() => {
    if (live === null) return;
    let frame = 0;
    const offValues = live.onValues((values: LiveValue[]) => {
      apply(values);
      if (!frame) frame = requestAnimationFrame(() => ((frame = 0), setTick((x) => x + 1)));
    });
    const offState = live.onState((s, why) => setState({ s, why }));
    live.watch(paths);
    setState({ s: live.state, why: live.error });
    return () => {
      offValues();
      offState();
      cancelAnimationFrame(frame);
      live.watch([]); // the next page subscribes to what it shows
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [live, key, target]);
  return { state: state.s, why: state.why };
}

/** The newest live value of every tag under `paths` (subtrees), and the stream's state. */
export function useLive(paths: string[]): { values: Map<string, TagState>; state: LiveState; why: string } {
  const map = useRef(new Map<string, TagState>());
  const stream = useLiveStream(paths, map.current, (values) => {
    for (const v of values) {
      const t = tagOfLive(v);
      if ("removed" in t) map.current.delete(t.path);
      else map.current.set(t.path, t);
    }
  });
  return { values: map.current, ...stream };
}

/** The newest health of these devices ("*": every device), by device id, live. */
export function useHealth(devices: string[]): Map<string, Health> {
  const live = useContext(LiveContext);
  const map = useRef(new Map<string, Health>());
  const [, setTick] = useState(0);
  const key = devices.join("\n");
  useEffect(() => {
    if (live === null) return;
    const off = live.onHealth((views) => {
      for (const h of views) {
        if (h.removed) map.current.delete(h.device_id);
        else map.current.set(h.device_id, h);
      }
      setTick((x) => x + 1);
    });
    live.watchDevices(devices);
    return () => {
      off();
      live.watchDevices([]);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [live, key]);
  return map.current;
}

/** The one-word state of a device's health, and its class (quality colours). */
export function healthWord(h: Health | undefined): { word: string; cls: string; title: string } {
  if (h === undefined) return { word: "no report", cls: "none", title: "no gateway has reported this device yet" };
  const title = [
    `state ${h.state ?? "?"}`, `breaker ${h.breaker ?? "?"}`, h.last_error ? `last error: ${h.last_error}` : "",
    h.stale ? "the report is stale (its gateway is silent or dead)" : "",
  ].filter(Boolean).join("; ");
  if (h.stale) return { word: "stale", cls: "uncertain", title };
  if (h.state === "offline") return { word: "offline", cls: "none", title };
  if (h.state === "failed") return { word: "failed", cls: "bad", title };
  if (!h.connected) return { word: h.breaker === "open" ? "unreachable (breaker open)" : "unreachable", cls: "bad", title };
  return { word: "connected", cls: "good", title };
}

/** Date.now(), renewed every `ms` (ages on the page). */
export function useNow(ms = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}

export function QualityBadge({ tag }: { tag: TagState }) {
  const title = qualityTitle(tag);
  return (
    <span class={`q q-${tag.quality}`} title={title} aria-label={title} tabIndex={0} data-quality={tag.quality}>
      {tag.quality === "none" ? "no value" : tag.quality}
    </span>
  );
}

export function ErrorBox({ error }: { error: unknown }) {
  if (!error) return null;
  const text =
    error instanceof ApiError ? `${error.status}: ${error.detail}` : error instanceof Error ? error.message : String(error);
  return (
    <p class="error" role="alert">
      {text}
    </p>
  );
}

export function LiveStatus({ state, why }: { state: LiveState; why: string }) {
  return (
    <span class={`live live-${state}`} title={why} role="status">
      {state === "live" ? "● live" : state === "connecting" ? "○ connecting…" : `○ offline${why ? `: ${why}` : ""}`}
    </span>
  );
}

export function Page({ title, actions, children }: { title: string; actions?: ComponentChildren; children: ComponentChildren }) {
  useEffect(() => {
    document.title = `${title} · NEXUS Edge`;
  }, [title]);
  return (
    <section class="page" aria-labelledby="page-title">
      <header class="page-head">
        <h1 id="page-title">{title}</h1>
        <div class="actions">{actions}</div>
      </header>
      {children}
    </section>
  );
}
