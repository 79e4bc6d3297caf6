// Users (admins): who may log in, with which role; create, change the role, disable/enable, reset a password.

import { useState } from "preact/hooks";

import { ApiError, atLeast, call, get, seg, type Role, type User } from "../api";
import { ErrorBox, Page, useLoad } from "../hooks";

interface UserRow {
  name: string;
  role: Role;
  disabled: boolean;
  created_at: string;
  created_by: string;
  password_changed_at: string | null;
}

const ROLES: Role[] = ["viewer", "operator", "engineer", "admin"];

export function Users({ user }: { user: User }) {
  const list = useLoad((signal) => (atLeast(user.role, "admin") ? get<UserRow[]>("/users", signal) : Promise.resolve([])), []);
  const [form, setForm] = useState({ name: "", role: "viewer" as Role, password: "" });
  const [errors, setErrors] = useState<{ field: string | null; text: string; ok?: boolean } | null>(null);
  const [reset, setReset] = useState<{ name: string; password: string } | null>(null);

  if (!atLeast(user.role, "admin")) {
    return <Page title="Users"><p class="error">Only an admin manages users.</p></Page>;
  }
  const run = async (what: () => Promise<unknown>, done: string): Promise<boolean> => {
    try {
      await what();
      setErrors({ field: null, text: done, ok: true });
      list.reload();
      return true;
    } catch (exc) {
      setErrors(exc instanceof ApiError ? { field: exc.field, text: `${exc.status}: ${exc.detail}` } : { field: null, text: String(exc) });
      return false;
    }
  };
  const create = async (ev: Event): Promise<void> => {
    ev.preventDefault();
    if (await run(() => call("/users", { method: "POST", body: form }), `user ${form.name} created`)) setForm({ name: "", role: "viewer", password: "" });
  };
  const fieldError = (f: string) => (errors && !errors.ok && errors.field === f ? <span class="field-error" role="alert">{errors.text}</span> : null);
  return (
    <Page title="Users" actions={<button type="button" onClick={list.reload}>Reload</button>}>
      <ErrorBox error={list.error} />
      {errors && (errors.ok || !["name", "password", "role"].includes(errors.field ?? "")) ? (
        <p class={errors.ok ? "notice" : "error"} role="alert">{errors.text}</p>
      ) : null}
      <table class="list users">
        <thead>
          <tr><th scope="col">user</th><th scope="col">role</th><th scope="col">state</th><th scope="col">created</th><th scope="col">password changed</th><th scope="col"><span class="sr-only">actions</span></th></tr>
        </thead>
        <tbody>
          {(list.data ?? []).map((u) => (
            <tr key={u.name} data-user={u.name}>
              <th scope="row">{u.name}</th>
              <td>
                <select aria-label={`role of ${u.name}`} value={u.role} disabled={u.name === user.name}
                  onChange={(e) => void run(() => call(`/users/${seg(u.name)}`, { method: "PATCH", body: { role: e.currentTarget.value } }), `${u.name} is now ${e.currentTarget.value}`)}>
                  {ROLES.map((r) => <option value={r} key={r}>{r}</option>)}
                </select>
              </td>
              <td>{u.disabled ? <span class="q q-bad">disabled</span> : <span class="q q-good">active</span>}</td>
              <td>{new Date(u.created_at).toLocaleString()} by {u.created_by}</td>
              <td>{u.password_changed_at ? new Date(u.password_changed_at).toLocaleString() : "—"}</td>
              <td>
                {u.name !== user.name ? (
                  <button type="button" onClick={() => void run(() => call(`/users/${seg(u.name)}`, { method: "PATCH", body: { disabled: !u.disabled } }), `${u.name} ${u.disabled ? "enabled" : "disabled"}`)}>
                    {u.disabled ? "Enable" : "Disable"}
                  </button>
                ) : null}{" "}
                {reset?.name === u.name ? (
                  <form class="write" onSubmit={(ev) => {
                    ev.preventDefault();
                    void run(() => call(`/users/${seg(u.name)}/password`, { method: "PUT", body: { password: reset.password } }), `password of ${u.name} set; their sessions ended`).then((ok) => ok && setReset(null));
                  }}>
                    <label class="sr-only" for={`pw-${u.name}`}>new password of {u.name}</label>
                    <input id={`pw-${u.name}`} type="password" autocomplete="new-password" value={reset.password} onInput={(e) => setReset({ name: u.name, password: e.currentTarget.value })} />
                    <button type="submit">Set</button>
                    <button type="button" onClick={() => setReset(null)}>Cancel</button>
                  </form>
                ) : (
                  <button type="button" onClick={() => setReset({ name: u.name, password: "" })}>Reset password</button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <form class="edit" onSubmit={(ev) => void create(ev)}>
        <fieldset>
          <legend>New user</legend>
          <div class={`field${fieldError("name") ? " invalid" : ""}`}>
            <label for="nu-name">name</label>
            <input id="nu-name" name="name" data-field="name" value={form.name} onInput={(e) => setForm({ ...form, name: e.currentTarget.value })} />
            {fieldError("name")}
          </div>
          <div class="field">
            <label for="nu-role">role</label>
            <select id="nu-role" name="role" value={form.role} onChange={(e) => setForm({ ...form, role: e.currentTarget.value as Role })}>
              {ROLES.map((r) => <option value={r} key={r}>{r}</option>)}
            </select>
          </div>
          <div class={`field${fieldError("password") ? " invalid" : ""}`}>
            <label for="nu-password">password</label>
            <input id="nu-password" name="password" data-field="password" type="password" autocomplete="new-password" value={form.password}
              onInput={(e) => setForm({ ...form, password: e.currentTarget.value })} />
            {fieldError("password")}
          </div>
          <div class="buttons"><button type="submit" class="primary">Create user</button></div>
        </fieldset>
      </form>
    </Page>
  );
}
