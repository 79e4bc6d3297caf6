// The whole plant as one document: export (JSON or YAML, now or at a revision) and import (engineers; merge
// or replace, guarded by the revision the page last saw so a change made meanwhile is not overwritten).

import { useState } from "preact/hooks";

import { ApiError, atLeast, call, query, type User } from "../api";
import { Page } from "../hooks";

interface CommitOut {
  revision: number;
  created: string[];
  updated: string[];
  deleted: string[];
}

function download(name: string, text: string, type: string): void {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function Transfer({ user }: { user: User }) {
  const [revision, setRevision] = useState("");
  const [etag, setEtag] = useState<string | null>(null);
  const [text, setText] = useState("");
  const [format, setFormat] = useState<"json" | "yaml">("yaml");
  const [mode, setMode] = useState<"merge" | "replace">("merge");
  const [message, setMessage] = useState<{ ok: boolean; text: string } | null>(null);
  const [busy, setBusy] = useState(false);

  const fetchExport = async (fmt: "json" | "yaml"): Promise<string> => {
    const r = await call<string>(`/export${query({ format: fmt, revision })}`, { text: true });
    if (!revision) setEtag(r.etag);
    return r.body;
  };
  const fail = (exc: unknown): void =>
    setMessage({ ok: false, text: exc instanceof ApiError ? `${exc.status}: ${exc.detail}${exc.field ? ` (field ${exc.field})` : ""}` : String(exc) });

  const exportTo = async (fmt: "json" | "yaml"): Promise<void> => {
    try {
      download(`plant${revision ? `-r${revision}` : ""}.${fmt}`, await fetchExport(fmt), fmt === "json" ? "application/json" : "application/yaml");
    } catch (exc) {
      fail(exc);
    }
  };
  const load = async (): Promise<void> => {
    try {
      setText(await fetchExport(format));
      setMessage(null);
    } catch (exc) {
      fail(exc);
    }
  };
  const importIt = async (ev: Event): Promise<void> => {
    ev.preventDefault();
    setBusy(true);
    setMessage(null);
    try {
      const r = await call<CommitOut>(`/import${query({ mode })}`, {
        method: "POST",
        raw: { text, type: format === "json" ? "application/json" : "application/yaml" },
        ifMatch: etag,
      });
      const c = r.body;
      setMessage({ ok: true, text: `imported as revision ${c.revision}: ${c.created.length} created, ${c.updated.length} updated, ${c.deleted.length} deleted` });
      setEtag(`"${c.revision}"`);
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 412) {
        setMessage({ ok: false, text: "The configuration was changed by someone else since you loaded it: load it again (or clear the guard) before importing." });
      } else fail(exc);
    } finally {
      setBusy(false);
    }
  };
  const fromFile = async (file: File | undefined): Promise<void> => {
    if (!file) return;
    setText(await file.text());
    setFormat(/\.json$/i.test(file.name) ? "json" : "yaml");
    setEtag(null);
  };
  const canImport = atLeast(user.role, "engineer");
  return (
    <Page title="Import and export">
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          At revision (empty: now)
          <input name="revision" inputMode="numeric" size={8} value={revision} onInput={(e) => setRevision(e.currentTarget.value.trim())} />
        </label>
        <button type="button" onClick={() => void exportTo("yaml")}>Download YAML</button>
        <button type="button" onClick={() => void exportTo("json")}>Download JSON</button>
        <button type="button" onClick={() => void load()}>Load into the editor</button>
      </form>
      {message ? <p class={message.ok ? "notice" : "error"} role="alert">{message.text}</p> : null}
      <form class="edit" onSubmit={(ev) => void importIt(ev)}>
        <div class="field">
          <label for="plant-doc">The plant document ({format.toUpperCase()}: {"{plant: {...levels}, devices: [...]}"})</label>
          <textarea id="plant-doc" name="plant" rows={22} value={text} onInput={(e) => setText(e.currentTarget.value)} />
        </div>
        {canImport ? (
          <div class="filters">
            <label>
              From a file
              <input type="file" accept=".yaml,.yml,.json" onChange={(e) => void fromFile(e.currentTarget.files?.[0])} />
            </label>
            <label>
              Format
              <select name="format" value={format} onChange={(e) => setFormat(e.currentTarget.value as "json" | "yaml")}>
                <option value="yaml">YAML</option>
                <option value="json">JSON</option>
              </select>
            </label>
            <label>
              Mode
              <select name="mode" value={mode} onChange={(e) => setMode(e.currentTarget.value as "merge" | "replace")}>
                <option value="merge">merge: devices not in it stay</option>
                <option value="replace">replace: devices not in it are deleted</option>
              </select>
            </label>
            <span class="summary">{etag ? `guarded: fails if the plant moved past revision ${etag.replaceAll('"', "")}` : "not guarded"}</span>
            <button type="submit" class="primary" disabled={busy || !text.trim()}>{busy ? "Importing…" : "Import"}</button>
          </div>
        ) : (
          <p class="muted">Importing needs the engineer role.</p>
        )}
      </form>
    </Page>
  );
}
