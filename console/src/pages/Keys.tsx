// API keys (admins), for machines: name and role; the secret is shown once, when it is made.

import { useState } from "preact/hooks";

import { ApiError, atLeast, call, get, seg, type Role, type User } from "../api";
import { ErrorBox, Page, useLoad } from "../hooks";

interface KeyRow {
  name: string;
  role: Role;
  created_at?: string;
  created_by?: string;
}

export function Keys({ user }: { user: User }) {
  const list = useLoad((signal) => (atLeast(user.role, "admin") ? get<KeyRow[]>("/keys", signal) : Promise.resolve([])), []);
  const [name, setName] = useState("");
  const [role, setRole] = useState<Role>("viewer");
  const [made, setMade] = useState<{ name: string; key: string } | null>(null);
  const [error, setError] = useState<ApiError | Error | null>(null);
  const [asked, setAsked] = useState<string | null>(null);
  if (!atLeast(user.role, "admin")) return <Page title="API keys"><p class="error">Only an admin manages API keys.</p></Page>;
  const create = async (ev: Event): Promise<void> => {
    ev.preventDefault();
    setError(null);
    try {
      const r = await call<{ name: string; key: string }>("/keys", { method: "POST", body: { name: name.trim(), role } });
      setMade(r.body);
      setName("");
      list.reload();
    } catch (exc) {
      setError(exc as Error);
    }
  };
  const revoke = async (key: string): Promise<void> => {
    setError(null);
    try {
      await call(`/keys/${seg(key)}`, { method: "DELETE" });
      list.reload();
    } catch (exc) {
      setError(exc as Error);
    } finally {
      setAsked(null);
    }
  };
  return (
    <Page title="API keys">
      <ErrorBox error={list.error ?? error} />
      {made ? (
        <p class="notice" role="alert">
          Key <strong>{made.name}</strong>: <code data-secret>{made.key}</code> — copy it now, it is not shown again.
        </p>
      ) : null}
      <table class="list keys">
        <thead><tr><th scope="col">name</th><th scope="col">role</th><th scope="col">created</th><th scope="col"><span class="sr-only">actions</span></th></tr></thead>
        <tbody>
          {(list.data ?? []).map((k) => (
            <tr key={k.name} data-key={k.name}>
              <th scope="row">{k.name}</th>
              <td>{k.role}</td>
              <td>{k.created_at ? `${new Date(k.created_at).toLocaleString()}${k.created_by ? ` by ${k.created_by}` : ""}` : "—"}</td>
              <td>
                {asked === k.name ? (
                  <>
                    <button type="button" class="danger" onClick={() => void revoke(k.name)}>Really revoke {k.name}</button>
                    <button type="button" onClick={() => setAsked(null)}>Keep it</button>
                  </>
                ) : (
                  <button type="button" onClick={() => setAsked(k.name)}>Revoke</button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <form class="filters" onSubmit={(ev) => void create(ev)}>
        <label>
          New key's name
          <input name="key-name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <label>
          Role
          <select name="key-role" value={role} onChange={(e) => setRole(e.currentTarget.value as Role)}>
            {(["viewer", "operator", "engineer", "admin"] as Role[]).map((r) => <option value={r} key={r}>{r}</option>)}
          </select>
        </label>
        <button type="submit" class="primary" disabled={!name.trim()}>Create key</button>
      </form>
    </Page>
  );
}
