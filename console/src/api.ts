// The REST client of gateway_core (same origin, /api/v1) and the session: the access token is held in memory
// only; the refresh token is an HTTP-only cookie the page never sees (docs/security.md). A 401 is answered by
// one refresh and one retry; the token is also renewed a minute before it expires.

export const API = "/api/v1";

export type Role = "viewer" | "operator" | "engineer" | "admin";
const ROLES: Role[] = ["viewer", "operator", "engineer", "admin"];

export function atLeast(role: Role | undefined, least: Role): boolean {
  return role !== undefined && ROLES.indexOf(role) >= ROLES.indexOf(least);
}

/** An answer of the API that was not 2xx: its status, `detail` and the `field` it names (if any). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
    readonly field: string | null = null,
  ) {
    super(detail);
  }
}

export interface User {
  name: string;
  role: Role;
}

type Listener = (user: User | null) => void;

interface Tokens {
  access_token: string;
  expires_in: number;
  user: User;
}

class Session {
  user: User | null = null;
  token = "";
  expires = 0; // ms since the epoch
  private refreshing: Promise<boolean> | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private listeners = new Set<Listener>();
  private tokenListeners = new Set<(token: string) => void>();

  onChange(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Called with every new access token (the live stream sends it on its socket). */
  onToken(fn: (token: string) => void): () => void {
    this.tokenListeners.add(fn);
    return () => this.tokenListeners.delete(fn);
  }

  private set(t: Tokens | null): void {
    clearTimeout(this.timer);
    const before = this.user;
    if (t === null) {
      this.user = null;
      this.token = "";
      this.expires = 0;
    } else {
      this.user = t.user;
      this.token = t.access_token;
      this.expires = Date.now() + t.expires_in * 1000;
      // renew ahead of expiry (a tenth of the lifetime, at most a minute early)
      const ahead = Math.min(60_000, (t.expires_in * 1000) / 10);
      this.timer = setTimeout(() => void this.refresh(), Math.max(1000, t.expires_in * 1000 - ahead));
      for (const fn of this.tokenListeners) fn(this.token);
    }
    if (before?.name !== this.user?.name || before?.role !== this.user?.role) {
      for (const fn of this.listeners) fn(this.user);
    }
  }

  async login(name: string, password: string): Promise<void> {
    const r = await fetch(`${API}/auth/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name, password }),
      credentials: "same-origin",
    });
    if (!r.ok) throw await errorOf(r);
    this.set((await r.json()) as Tokens);
  }

  /** A new access token from the refresh cookie; false (and logged out) when there is no valid session. */
  refresh(): Promise<boolean> {
    if (this.refreshing === null) {
      this.refreshing = (async () => {
        try {
          const r = await fetch(`${API}/auth/refresh`, { method: "POST", credentials: "same-origin" });
          if (!r.ok) {
            this.set(null);
            return false;
          }
          this.set((await r.json()) as Tokens);
          return true;
        } catch {
          return false; // the network: keep the session, the next request tries again
        } finally {
          this.refreshing = null;
        }
      })();
    }
    return this.refreshing;
  }

  async logout(): Promise<void> {
    const headers: Record<string, string> = this.token ? { Authorization: `Bearer ${this.token}` } : {};
    try {
      await fetch(`${API}/auth/logout`, { method: "POST", headers, credentials: "same-origin" });
    } finally {
      this.set(null);
    }
  }
}

export const session = new Session();

async function errorOf(r: Response): Promise<ApiError> {
  let detail = `${r.status} ${r.statusText}`;
  let field: string | null = null;
  try {
    const body = (await r.json()) as { detail?: unknown; field?: unknown };
    if (typeof body.detail === "string") detail = body.detail;
    if (typeof body.field === "string") field = body.field;
  } catch {
    // not JSON: the status line says it
  }
  if (r.status === 429) {
    const wait = r.headers.get("Retry-After");
    if (wait) detail += ` (try again in ${wait} s)`;
  }
  return new ApiError(r.status, detail, field);
}

export interface Answer<T> {
  body: T;
  etag: string | null;
  status: number;
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  ifMatch?: string | null;
  signal?: AbortSignal;
  raw?: { text: string; type: string }; // a body sent as it is (an imported YAML file)
  text?: boolean; // the answer as text (an export), not JSON
}

/** One API call with the session's token; JSON in and out. Throws ApiError for a non-2xx answer. */
export async function call<T>(path: string, opts: RequestOptions = {}): Promise<Answer<T>> {
  const send = (): Promise<Response> => {
    const headers: Record<string, string> = { Accept: "application/json" };
    if (session.token) headers.Authorization = `Bearer ${session.token}`;
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    if (opts.raw !== undefined) headers["Content-Type"] = opts.raw.type;
    if (opts.ifMatch) headers["If-Match"] = opts.ifMatch;
    return fetch(`${API}${path}`, {
      method: opts.method ?? "GET",
      headers,
      body: opts.raw !== undefined ? opts.raw.text : opts.body === undefined ? undefined : JSON.stringify(opts.body),
      credentials: "same-origin",
      signal: opts.signal,
    });
  };
  let r = await send();
  if (r.status === 401 && (await session.refresh())) r = await send();
  if (!r.ok) throw await errorOf(r);
  const text = r.status === 204 ? "" : await r.text();
  const body = opts.text ? text : text ? JSON.parse(text) : null;
  return { body: body as T, etag: r.headers.get("ETag"), status: r.status };
}

export async function get<T>(path: string, signal?: AbortSignal): Promise<T> {
  return (await call<T>(path, { signal })).body;
}

/** `a=1&b=x` from the defined entries; arrays repeat their key (the history API's tag=). */
export function query(params: Record<string, string | number | boolean | string[] | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) for (const x of v) q.append(k, x);
    else q.append(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

export function seg(s: string): string {
  return encodeURIComponent(s);
}

// -- the API's shapes, as far as the console reads them -----------------------------------------------------
export type Doc = Record<string, unknown>;

export interface TagDoc extends Doc {
  name: string;
  type?: string;
  unit?: string;
  writable?: boolean;
}

export interface DeviceDoc extends Doc {
  id: string;
  enterprise: string;
  site: string;
  area: string;
  line: string;
  protocol?: string; // absent: modbus_tcp (the gateway's default, gateway/config.py)
  tags?: TagDoc[];
}

export interface DeviceOut {
  id: string;
  revision: number;
  gateway: string | null;
  owner: string | null;
  device: DeviceDoc;
}

export interface DeviceList {
  items: DeviceOut[];
  total: number;
  next: string | null;
  revision: number;
}

export interface GatewayOut {
  id: string;
  online: boolean;
  capacity: number;
  applied_revision: number;
  lag: number;
  assigned: string[];
  polling: string[];
  errors: Record<string, string>;
  last_status_ts: number | null;
}

export interface GatewayList {
  items: GatewayOut[];
  revision: number;
}

/** Every device (the list is paginated by a keyset cursor). */
export async function allDevices(signal?: AbortSignal): Promise<DeviceOut[]> {
  const out: DeviceOut[] = [];
  let after: string | null = null;
  do {
    const page: DeviceList = await get<DeviceList>(`/devices${query({ limit: 1000, after })}`, signal);
    out.push(...page.items);
    after = page.next;
  } while (after !== null);
  return out;
}

export function unsPath(d: DeviceDoc): string {
  return [d.enterprise, d.site, d.area, d.line, d.id].join("/");
}

/** A device's protocol: absent means the gateway's default. */
export function protocolOf(d: DeviceDoc): string {
  return d.protocol ?? "modbus_tcp";
}
