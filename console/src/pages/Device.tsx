// One device: its place, gateway and last error, its tags live, and a write form for the writable ones
// (operator and above) showing the gateway's answer.

import { useState } from "preact/hooks";

import { ApiError, atLeast, call, get, protocolOf, seg, unsPath, type DeviceOut, type GatewayList, type TagDoc, type User } from "../api";
import { ErrorBox, healthWord, LiveStatus, Page, QualityBadge, useHealth, useLive, useLoad, useNow } from "../hooks";
import { href } from "../router";
import { parseWriteValue } from "../form";
import { formatAge, formatValue, type TagState } from "../uns";

interface WriteAnswer {
  ok: boolean;
  value?: unknown;
  error?: string;
  request_id?: string;
}

function WriteForm({ device, tag }: { device: string; tag: TagDoc }) {
  const [text, setText] = useState("");
  const [busy, setBusy] = useState(false);
  const [answer, setAnswer] = useState<{ ok: boolean; text: string } | null>(null);
  const submit = async (ev: Event): Promise<void> => {
    ev.preventDefault();
    setAnswer(null);
    let value: unknown;
    try {
      value = parseWriteValue(text, tag.type);
    } catch (exc) {
      setAnswer({ ok: false, text: `value: ${(exc as Error).message}` });
      return;
    }
    setBusy(true);
    try {
      const r = await call<WriteAnswer>(`/devices/${seg(device)}/tags/${seg(tag.name)}/write`, {
        method: "POST",
        body: { value },
      });
      const a = r.body;
      setAnswer(a.ok
        ? { ok: true, text: `written: ${formatValue(a.value)} (the gateway confirmed)` }
        : { ok: false, text: `refused by the gateway: ${a.error ?? "no reason given"}` });
    } catch (exc) {
      setAnswer({ ok: false, text: exc instanceof ApiError ? `${exc.status}: ${exc.detail}` : String(exc) });
    } finally {
      setBusy(false);
    }
  };
  const id = `write-${tag.name}`;
  return (
    <form class="write" onSubmit={(ev) => void submit(ev)} data-write={tag.name}>
      <label for={id} class="sr-only">
        new value of {tag.name}
      </label>
      <input id={id} name="value" value={text} size={8} placeholder={tag.type === "bool" ? "true/false" : "value"}
        onInput={(e) => setText(e.currentTarget.value)} />
      <button type="submit" disabled={busy}>
        {busy ? "Writing…" : "Write"}
      </button>
      {answer ? (
        <output class={answer.ok ? "ok" : "error-text"} role="status">
          {answer.text}
        </output>
      ) : null}
    </form>
  );
}

export function DevicePage({ user, id }: { user: User; id: string }) {
  const device = useLoad((signal) => get<DeviceOut>(`/devices/${seg(id)}`, signal), [id]);
  const gateways = useLoad((signal) => get<GatewayList>("/gateways", signal), []);
  const base = device.data ? unsPath(device.data.device) : "";
  const live = useLive(base ? [base] : []);
  const now = useNow();
  const d = device.data;
  const health = useHealth([id]).get(id);
  const hw = healthWord(health);
  const error = health?.last_error ?? gateways.data?.items.map((g) => g.errors?.[id]).find(Boolean);
  const canWrite = atLeast(user.role, "operator");
  return (
    <Page
      title={`Device ${id}`}
      actions={
        <>
          <LiveStatus state={live.state} why={live.why} />
          {atLeast(user.role, "engineer") && d ? (
            <a class="button" href={href("devices", id, "edit")}>
              Edit
            </a>
          ) : null}
          {d ? <a class="button" href={`/trends?prefix=${encodeURIComponent(base)}`}>Trend</a> : null}
          <a class="button" href={`/audit?device=${encodeURIComponent(id)}`}>History</a>
        </>
      }
    >
      <ErrorBox error={device.error} />
      {d ? (
        <>
          <dl class="facts">
            <dt>protocol</dt>
            <dd>{protocolOf(d.device)}</dd>
            <dt>place</dt>
            <dd>{base}</dd>
            <dt>gateway</dt>
            <dd>{d.gateway ?? "none polls it now"}</dd>
            <dt>revision</dt>
            <dd>{d.revision}</dd>
            <dt>health</dt>
            <dd data-health={hw.cls}>
              <span class={`q q-${hw.cls}`} title={hw.title} tabIndex={0}>{hw.word}</span>
              {health ? ` · breaker ${health.breaker ?? "?"} · reported by ${health.gateway ?? "?"} ${formatAge(health.ts, now)} ago` : ""}
            </dd>
            <dt>polls</dt>
            <dd>
              {health
                ? `${health.polls ?? 0} good, ${health.errors ?? 0} failed${health.latency_ms ? ` · latency p50 ${health.latency_ms.p50.toFixed(1)} ms, p99 ${health.latency_ms.p99.toFixed(1)} ms (${health.latency_ms.samples} polls in ${health.latency_ms.window_s} s)` : ""}`
                : "—"}
            </dd>
            <dt>last good read</dt>
            <dd>{health?.last_good_ts ? `${formatAge(health.last_good_ts, now)} ago` : "—"}</dd>
            <dt>last error</dt>
            <dd class={error ? "error-text" : ""}>{error ?? "—"}{health?.last_error_ts ? ` (${formatAge(health.last_error_ts, now)} ago)` : ""}</dd>
          </dl>
          <table class="tags device-tags">
            <thead>
              <tr>
                <th scope="col">tag</th>
                <th scope="col">type</th>
                <th scope="col">value</th>
                <th scope="col">unit</th>
                <th scope="col">quality</th>
                <th scope="col">age</th>
                <th scope="col">{canWrite ? "write" : ""}</th>
              </tr>
            </thead>
            <tbody>
              {(d.device.tags ?? []).map((t) => {
                const path = `${base}/${t.name}`;
                const v: TagState = live.values.get(path) ?? { path, quality: "none", unit: t.unit };
                return (
                  <tr key={t.name} data-path={path} class={`tag tag-${v.quality}`}>
                    <th scope="row">{t.name}</th>
                    <td>{t.type ?? ""}</td>
                    <td class="value" data-value>{formatValue(v.value)}</td>
                    <td>{v.unit ?? t.unit ?? ""}</td>
                    <td><QualityBadge tag={v} /></td>
                    <td class="age">{formatAge(v.ts, now)}</td>
                    <td>{t.writable && canWrite ? <WriteForm device={id} tag={t} /> : t.writable ? "writable" : ""}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </>
      ) : null}
    </Page>
  );
}
