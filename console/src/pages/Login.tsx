import { useState } from "preact/hooks";

import { ApiError, session } from "../api";

export function Login() {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (ev: Event): Promise<void> => {
    ev.preventDefault();
    setBusy(true);
    setError("");
    try {
      await session.login(name.trim(), password);
    } catch (exc) {
      setError(exc instanceof ApiError ? (exc.status === 401 ? "Wrong user name or password." : exc.detail) : String(exc));
      setPassword("");
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="login">
      <form onSubmit={(ev) => void submit(ev)} aria-labelledby="login-title">
        <h1 id="login-title">NEXUS Edge</h1>
        <label>
          User name
          <input name="name" autocomplete="username" value={name} required autoFocus
            onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <label>
          Password
          <input name="password" type="password" autocomplete="current-password" value={password} required
            onInput={(e) => setPassword(e.currentTarget.value)} />
        </label>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          {busy ? "Logging in…" : "Log in"}
        </button>
      </form>
    </main>
  );
}
