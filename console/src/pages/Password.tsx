// A user's own password (PUT /auth/password): their other sessions end, this one stays.

import { useState } from "preact/hooks";

import { ApiError, call } from "../api";
import { Page } from "../hooks";

export function Password() {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [again, setAgain] = useState("");
  const [result, setResult] = useState<{ ok: boolean; text: string; field?: string | null } | null>(null);
  const submit = async (ev: Event): Promise<void> => {
    ev.preventDefault();
    if (next !== again) {
      setResult({ ok: false, text: "the two new passwords differ", field: "again" });
      return;
    }
    try {
      await call("/auth/password", { method: "PUT", body: { current_password: current, new_password: next } });
      setResult({ ok: true, text: "password changed; your other sessions have ended" });
      setCurrent("");
      setNext("");
      setAgain("");
    } catch (exc) {
      setResult(exc instanceof ApiError ? { ok: false, text: exc.detail, field: exc.field } : { ok: false, text: String(exc) });
    }
  };
  const err = (f: string) => (result && !result.ok && result.field === f ? <span class="field-error" role="alert">{result.text}</span> : null);
  const fields: [string, string, string, (v: string) => void, string][] = [
    ["current_password", "current password", current, setCurrent, "current-password"],
    ["new_password", "new password", next, setNext, "new-password"],
    ["again", "new password again", again, setAgain, "new-password"],
  ];
  return (
    <Page title="Your password">
      <form class="edit" onSubmit={(ev) => void submit(ev)}>
        {result && (result.ok || !fields.some(([f]) => f === result.field)) ? (
          <p class={result.ok ? "notice" : "error"} role="alert">{result.text}</p>
        ) : null}
        <fieldset>
          {fields.map(([f, label, value, set, auto]) => (
            <div class={`field${err(f) ? " invalid" : ""}`} key={f}>
              <label for={`pw-${f}`}>{label}</label>
              <input id={`pw-${f}`} type="password" name={f} data-field={f} autocomplete={auto} value={value}
                onInput={(e) => set(e.currentTarget.value)} />
              {err(f)}
            </div>
          ))}
          <div class="buttons"><button type="submit" class="primary">Change password</button></div>
        </fieldset>
      </form>
    </Page>
  );
}
