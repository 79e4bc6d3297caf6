// The console's shell: the session (login, refresh at start and before expiry, logout), the navigation, one
// live stream for the pages, and the page of the current route.

import { render } from "preact";
import { useEffect, useMemo, useState } from "preact/hooks";

import { atLeast, session, type User } from "./api";
import { LiveContext } from "./hooks";
import { Live } from "./live";
import { Alarms } from "./pages/Alarms";
import { Audit, Revisions } from "./pages/History";
import { DevicePage } from "./pages/Device";
import { Devices } from "./pages/Devices";
import { EditDevice } from "./pages/Edit";
import { Gateways } from "./pages/Gateways";
import { Keys } from "./pages/Keys";
import { Login } from "./pages/Login";
import { Password } from "./pages/Password";
import { Plant } from "./pages/Plant";
import { Transfer } from "./pages/Transfer";
import { Trends } from "./pages/Trends";
import { Users } from "./pages/Users";
import { href, navigate, useRoute } from "./router";
import "./style.css";

const NAV: [string, string][] = [
  ["plant", "Plant"],
  ["devices", "Devices"],
  ["trends", "Trends"],
  ["alarms", "Alarms"],
  ["gateways", "Gateways"],
  ["revisions", "Revisions"],
  ["audit", "Audit"],
  ["transfer", "Import/export"],
];

function Content({ user }: { user: User }) {
  const route = useRoute();
  const [first, second, third] = route.parts;
  switch (first) {
    case undefined:
    case "plant":
      return <Plant />;
    case "devices":
      if (second === undefined) return <Devices user={user} />;
      if (second === "new") return <EditDevice user={user} id={null} />;
      if (third === "edit") return <EditDevice user={user} id={second} />;
      return <DevicePage user={user} id={second} />;
    case "trends":
      return <Trends route={route} />;
    case "gateways":
      return <Gateways />;
    case "alarms":
      return <Alarms route={route} user={user} />;
    case "revisions":
      return <Revisions user={user} />;
    case "audit":
      return <Audit route={route} />;
    case "transfer":
      return <Transfer user={user} />;
    case "users":
      return <Users user={user} />;
    case "keys":
      return <Keys user={user} />;
    case "password":
      return <Password />;
    default:
      return (
        <section class="page">
          <h1>Not found</h1>
          <p>
            Nothing at <code>{route.path}</code>. <a href="/plant">The plant</a>
          </p>
        </section>
      );
  }
}

function Shell({ user }: { user: User }) {
  const route = useRoute();
  const live = useMemo(() => new Live(), [user.name]);
  useEffect(() => () => live.close(), [live]);
  const here = route.parts[0] ?? "plant";
  return (
    <LiveContext.Provider value={live}>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">NEXUS Edge</span>
        <nav aria-label="pages">
          {[...NAV, ...(atLeast(user.role, "admin") ? ([["users", "Users"], ["keys", "API keys"]] as [string, string][]) : [])].map(([path, label]) => (
            <a href={href(path)} aria-current={here === path ? "page" : undefined} key={path}>
              {label}
            </a>
          ))}
        </nav>
        <span class="who">
          <span title={`role ${user.role}`}>
            {user.name} · {user.role}
            {atLeast(user.role, "engineer") ? "" : " (read only)"}
          </span>
          <a href="/password" class="password-link">Password</a>
          <button type="button" onClick={() => void session.logout()}>
            Log out
          </button>
        </span>
      </header>
      <main id="main" tabIndex={-1}>
        <Content user={user} />
      </main>
    </LiveContext.Provider>
  );
}

function App() {
  const [user, setUser] = useState<User | null>(session.user);
  const [starting, setStarting] = useState(true);
  useEffect(() => {
    const off = session.onChange(setUser);
    void session.refresh().finally(() => setStarting(false)); // a session left from before (the cookie)
    return off;
  }, []);
  useEffect(() => {
    if (!starting && user !== null && window.location.pathname === "/login") navigate("/plant", true);
  }, [user, starting]);
  if (starting) return <p class="starting">Loading…</p>;
  if (user === null) return <Login />;
  return <Shell user={user} />;
}

const root = document.getElementById("app");
if (root) render(<App />, root);
