// Revisions (with rollback to any of them, engineers and above) and the audit log.

import { useState } from "preact/hooks";

import { ApiError, atLeast, call, get, query, type User } from "../api";
import { ErrorBox, Page, useLoad } from "../hooks";
import type { Route } from "../router";
import { navigate } from "../router";
import { diffLines } from "../form";

interface Revision {
  revision: number;
  at: string;
  actor: string;
  action: string;
  summary: string;
  rollback_of: number | null;
  devices_changed: number;
}

interface AuditRow {
  id: number;
  revision: number | null;
  at: string;
  actor: string;
  action: string;
  target: string;
  before: Record<string, unknown> | null;
  after: Record<string, unknown> | null;
}

const PAGE = 50;

function when(iso: string): string {
  return new Date(iso).toLocaleString();
}

export function Revisions({ user }: { user: User }) {
  const [offset, setOffset] = useState(0);
  const list = useLoad((signal) => get<{ items: Revision[]; total: number; current: number }>(`/revisions${query({ limit: PAGE, offset })}`, signal), [offset]);
  const [asked, setAsked] = useState<number | null>(null);
  const [result, setResult] = useState<{ ok: boolean; text: string } | null>(null);
  const rollback = async (rev: number): Promise<void> => {
    setResult(null);
    try {
      const exp = await call<unknown>("/export");
      const r = await call<{ revision: number; created: string[]; updated: string[]; deleted: string[] }>(
        `/revisions/${rev}/rollback`, { method: "POST", ifMatch: exp.etag });
      const b = r.body;
      setResult({ ok: true, text: `rolled back to ${rev} as revision ${b.revision}: ${b.created.length} created, ${b.updated.length} updated, ${b.deleted.length} deleted` });
      list.reload();
    } catch (exc) {
      setResult({ ok: false, text: exc instanceof ApiError
        ? exc.status === 412 ? "The configuration changed meanwhile (someone else): reload and choose again." : `${exc.status}: ${exc.detail}`
        : String(exc) });
    } finally {
      setAsked(null);
    }
  };
  const items = list.data?.items ?? [];
  const canRollback = atLeast(user.role, "engineer");
  return (
    <Page title="Revisions" actions={<button type="button" onClick={list.reload}>Reload</button>}>
      <ErrorBox error={list.error} />
      {result ? <p class={result.ok ? "notice" : "error"} role="alert">{result.text}</p> : null}
      <table class="list revisions">
        <thead>
          <tr>
            <th scope="col">revision</th><th scope="col">when</th><th scope="col">who</th><th scope="col">what</th>
            <th scope="col">devices</th><th scope="col"><span class="sr-only">actions</span></th>
          </tr>
        </thead>
        <tbody>
          {items.map((r) => (
            <tr key={r.revision} data-revision={r.revision}>
              <th scope="row">{r.revision}{r.revision === list.data?.current ? " (current)" : ""}</th>
              <td>{when(r.at)}</td>
              <td>{r.actor}</td>
              <td>{r.action}: {r.summary}{r.rollback_of !== null ? ` (rollback to ${r.rollback_of})` : ""}</td>
              <td>{r.devices_changed}</td>
              <td>
                <a href={`/audit?revision=${r.revision}`}>audit</a>{" "}
                {canRollback && r.revision !== list.data?.current ? (
                  asked === r.revision ? (
                    <>
                      <button type="button" class="danger" onClick={() => void rollback(r.revision)}>Really roll back to {r.revision}</button>
                      <button type="button" onClick={() => setAsked(null)}>Cancel</button>
                    </>
                  ) : (
                    <button type="button" onClick={() => setAsked(r.revision)}>Roll back to this</button>
                  )
                ) : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Pager offset={offset} total={list.data?.total ?? 0} setOffset={setOffset} />
    </Page>
  );
}

function Pager({ offset, total, setOffset }: { offset: number; total: number; setOffset: (n: number) => void }) {
  if (total <= PAGE) return null;
  return (
    <nav class="pager" aria-label="pages">
      <button type="button" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>Newer</button>
      <span>{offset + 1}–{Math.min(total, offset + PAGE)} of {total}</span>
      <button type="button" disabled={offset + PAGE >= total} onClick={() => setOffset(offset + PAGE)}>Older</button>
    </nav>
  );
}

export function Audit({ route }: { route: Route }) {
  const device = route.params.get("device") ?? "";
  const revision = route.params.get("revision") ?? "";
  const [offset, setOffset] = useState(0);
  const [text, setText] = useState(device);
  const list = useLoad((signal) => get<{ items: AuditRow[]; total: number }>(`/audit${query({ device, revision, limit: PAGE, offset })}`, signal), [device, revision, offset]);
  return (
    <Page title="Audit log" actions={<button type="button" onClick={list.reload}>Reload</button>}>
      <form class="filters" onSubmit={(e) => (e.preventDefault(), setOffset(0), navigate(`/audit${query({ device: text.trim() })}`))}>
        <label>
          Device
          <input name="device" value={text} onInput={(e) => setText(e.currentTarget.value)} />
        </label>
        <button type="submit">Show</button>
        {revision ? <span class="summary">revision {revision} <a href="/audit">all</a></span> : null}
      </form>
      <ErrorBox error={list.error} />
      <table class="list audit">
        <thead>
          <tr><th scope="col">when</th><th scope="col">revision</th><th scope="col">who</th><th scope="col">action</th><th scope="col">target</th><th scope="col">change</th></tr>
        </thead>
        <tbody>
          {(list.data?.items ?? []).map((a) => (
            <tr key={a.id}>
              <td>{when(a.at)}</td>
              <td>{a.revision ?? "—"}</td>
              <td>{a.actor}</td>
              <td>{a.action}</td>
              <td>{a.target}</td>
              <td>
                <details>
                  <summary>{diffLines(a.before, a.after).length} change(s)</summary>
                  <pre>{diffLines(a.before, a.after).join("\n")}</pre>
                </details>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Pager offset={offset} total={list.data?.total ?? 0} setOffset={setOffset} />
    </Page>
  );
}
