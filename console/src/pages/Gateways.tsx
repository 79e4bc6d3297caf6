// Gateways: online state, capacity, applied revision and lag, the devices assigned and polled, their errors.

import { get, type GatewayList } from "../api";
import { ErrorBox, Page, useLoad, useNow } from "../hooks";
import { href } from "../router";
import { formatAge } from "../uns";

export function Gateways() {
  const list = useLoad((signal) => get<GatewayList>("/gateways", signal), []);
  const now = useNow(2000);
  return (
    <Page title="Gateways" actions={<button type="button" onClick={list.reload}>Reload</button>}>
      <ErrorBox error={list.error} />
      {list.data ? <p class="summary">configuration revision {list.data.revision}</p> : null}
      <table class="list gateways">
        <thead>
          <tr>
            <th scope="col">gateway</th><th scope="col">state</th><th scope="col">capacity</th>
            <th scope="col">applied revision</th><th scope="col">lag</th><th scope="col">devices</th>
            <th scope="col">errors</th><th scope="col">last status</th>
          </tr>
        </thead>
        <tbody>
          {(list.data?.items ?? []).map((g) => (
            <tr key={g.id} data-gateway={g.id}>
              <th scope="row">{g.id}</th>
              <td><span class={`q q-${g.online ? "good" : "bad"}`}>{g.online ? "online" : "offline"}</span></td>
              <td>{g.capacity}</td>
              <td>{g.applied_revision}</td>
              <td>{g.lag}</td>
              <td>
                {g.assigned.map((d, i) => (
                  <span key={d}>
                    {i ? ", " : ""}
                    <a href={href("devices", d)}>{d}</a>
                    {g.polling.includes(d) ? "" : " (not polled yet)"}
                  </span>
                ))}
              </td>
              <td class="error-text">{Object.entries(g.errors ?? {}).map(([d, e]) => `${d}: ${e}`).join("; ")}</td>
              <td>{g.last_status_ts ? `${formatAge(g.last_status_ts, now)} ago` : "—"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.data && !list.data.items.length ? <p class="empty">No gateway has reported yet.</p> : null}
    </Page>
  );
}
