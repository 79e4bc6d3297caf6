// Devices: every device with its protocol, UNS place, gateway and the gateway's last error for it.

import { useState } from "preact/hooks";

import { allDevices, atLeast, protocolOf, get, type GatewayList, type User } from "../api";
import type { Health } from "../live";
import { ErrorBox, healthWord, Page, useHealth, useLoad } from "../hooks";
import { href } from "../router";

export function Devices({ user }: { user: User }) {
  const devices = useLoad((signal) => allDevices(signal), []);
  const gateways = useLoad((signal) => get<GatewayList>("/gateways", signal), []);
  const health = useHealth(["*"]);
  const [text, setText] = useState("");
  const errors = new Map<string, string>();
  for (const g of gateways.data?.items ?? []) for (const [d, e] of Object.entries(g.errors ?? {})) errors.set(d, e);
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  const rows = (devices.data ?? []).filter((d) => {
    const hay = `${d.id} ${protocolOf(d.device)} ${d.device.enterprise}/${d.device.site}/${d.device.area}/${d.device.line} ${d.gateway ?? ""}`;
    return words.every((w) => hay.toLowerCase().includes(w));
  });
  return (
    <Page
      title="Devices"
      actions={
        <>
          <button type="button" onClick={() => (devices.reload(), gateways.reload())}>
            Reload
          </button>
          {atLeast(user.role, "engineer") ? (
            <a class="button" href="/devices/new">
              New device
            </a>
          ) : null}
        </>
      }
    >
      <form class="filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <label>
          Filter
          <input type="search" name="filter" value={text} onInput={(e) => setText(e.currentTarget.value)} />
        </label>
        <span class="summary">
          {rows.length} of {devices.data?.length ?? 0} devices
        </span>
      </form>
      <ErrorBox error={devices.error} />
      <ErrorBox error={gateways.error} />
      <table class="list devices">
        <thead>
          <tr>
            <th scope="col">device</th>
            <th scope="col">protocol</th>
            <th scope="col">place (enterprise/site/area/line)</th>
            <th scope="col">tags</th>
            <th scope="col">gateway</th>
            <th scope="col">health</th>
            <th scope="col">poll p50 / p99</th>
            <th scope="col">last error</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((d) => (
            <tr key={d.id} data-device={d.id}>
              <th scope="row">
                <a href={href("devices", d.id)}>{d.id}</a>
              </th>
              <td>{protocolOf(d.device)}</td>
              <td>{[d.device.enterprise, d.device.site, d.device.area, d.device.line].join("/")}</td>
              <td>{d.device.tags?.length ?? 0}</td>
              <td>{d.gateway ?? <span class="muted">none</span>}</td>
              <HealthCells id={d.id} health={health} fallback={errors.get(d.id)} />
            </tr>
          ))}
        </tbody>
      </table>
      {devices.data && !devices.data.length ? <p class="empty">No devices configured.</p> : null}
    </Page>
  );
}

function HealthCells({ id, health, fallback }: { id: string; health: Map<string, Health>; fallback?: string }) {
  const h = health.get(id);
  const w = healthWord(h);
  const error = h?.last_error ?? fallback;
  return (
    <>
      <td data-health={w.cls}>
        <span class={`q q-${w.cls}`} title={w.title} tabIndex={0}>{w.word}</span>
      </td>
      <td>{h?.latency_ms ? `${h.latency_ms.p50.toFixed(1)} / ${h.latency_ms.p99.toFixed(1)} ms` : "—"}</td>
      <td class={error ? "error-text" : "muted"}>{error ?? "—"}</td>
    </>
  );
}
