// The live stream (GET /api/v1/live, docs/gateway_core.md): one WebSocket for the page, the access token in the
// first message (and again whenever the session renews it), the subtrees the page shows as subscriptions.
// Reconnects with capped backoff; a refused token (close 4401) triggers a refresh first.

import { session } from "./api";

export interface LiveValue {
  path: string;
  value?: unknown;
  ts?: number;
  q?: number;
  quality?: "good" | "uncertain" | "bad";
  unit?: string;
  reason?: string;
  removed?: boolean;
}

export type LiveState = "connecting" | "live" | "closed";

/** A device's health as gateway_core shows it (docs/gateway_core.md, Device health); `removed` when it left. */
export interface Health {
  device_id: string;
  removed?: boolean;
  gateway?: string;
  assigned_gateway?: string | null;
  state?: "polling" | "failed" | "offline";
  connected?: boolean;
  breaker?: "closed" | "open" | "half_open";
  consecutive_errors?: number;
  last_error?: string | null;
  last_error_ts?: number | null;
  last_good_ts?: number | null;
  latency_ms?: { p50: number; p99: number; samples: number; window_s: number } | null;
  polls?: number;
  errors?: number;
  ts?: number;
  gateway_online?: boolean | null;
  stale?: boolean;
}

type Handler = (values: LiveValue[]) => void;

export class Live {
  private ws: WebSocket | null = null;
  private paths = new Set<string>();
  private handlers = new Set<Handler>();
  private devices = new Set<string>();
  private healthHandlers = new Set<(h: Health[]) => void>();
  private stateHandlers = new Set<(s: LiveState, why: string) => void>();
  private backoff = 500;
  private stopped = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private offToken: () => void;
  state: LiveState = "closed";
  error = "";

  constructor(private readonly url = liveUrl()) {
    this.offToken = session.onToken((token) => {
      if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "auth", token }));
    });
  }

  onValues(fn: Handler): () => void {
    this.handlers.add(fn);
    return () => this.handlers.delete(fn);
  }

  onHealth(fn: (h: Health[]) => void): () => void {
    this.healthHandlers.add(fn);
    return () => this.healthHandlers.delete(fn);
  }

  /** Watch these devices' health ("*": every device). */
  watchDevices(devices: Iterable<string>): void {
    const want = new Set(devices);
    const add = [...want].filter((d) => !this.devices.has(d));
    const drop = [...this.devices].filter((d) => !want.has(d));
    this.devices = want;
    if (this.state === "live" && this.ws) {
      if (drop.length) this.ws.send(JSON.stringify({ type: "unsubscribe", devices: drop }));
      if (add.length) this.ws.send(JSON.stringify({ type: "subscribe", devices: add }));
    } else if (this.ws === null && !this.stopped) {
      this.connect();
    }
  }

  onState(fn: (s: LiveState, why: string) => void): () => void {
    this.stateHandlers.add(fn);
    return () => this.stateHandlers.delete(fn);
  }

  /** Watch exactly these paths (UNS subtrees of 1 to 6 levels). */
  watch(paths: Iterable<string>): void {
    const want = new Set(paths);
    const add = [...want].filter((p) => !this.paths.has(p));
    const drop = [...this.paths].filter((p) => !want.has(p));
    this.paths = want;
    if (this.state === "live" && this.ws) {
      if (drop.length) this.ws.send(JSON.stringify({ type: "unsubscribe", paths: drop }));
      if (add.length) this.ws.send(JSON.stringify({ type: "subscribe", paths: add }));
    } else if (this.ws === null && !this.stopped) {
      this.connect();
    }
  }

  close(): void {
    this.stopped = true;
    this.offToken();
    clearTimeout(this.timer);
    this.ws?.close(1000);
    this.ws = null;
  }

  private setState(s: LiveState, why = ""): void {
    this.state = s;
    this.error = why;
    for (const fn of this.stateHandlers) fn(s, why);
  }

  private connect(): void {
    if (this.stopped || !session.token) return;
    this.setState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: session.token }));
    ws.onmessage = (ev: MessageEvent<string>) => {
      let msg: { type?: string; values?: LiveValue[]; devices?: Health[]; detail?: string };
      try {
        msg = JSON.parse(ev.data) as typeof msg;
      } catch {
        return;
      }
      if (msg.type === "ready") {
        this.backoff = 500;
        this.setState("live");
        if (this.paths.size) ws.send(JSON.stringify({ type: "subscribe", paths: [...this.paths] }));
        if (this.devices.size) ws.send(JSON.stringify({ type: "subscribe", devices: [...this.devices] }));
      } else if (msg.type === "values" && msg.values) {
        for (const fn of this.handlers) fn(msg.values);
      } else if (msg.type === "health" && msg.devices) {
        for (const fn of this.healthHandlers) fn(msg.devices);
      } else if (msg.type === "error") {
        this.setState(this.state, msg.detail ?? "error");
      }
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      this.setState("closed", ev.reason || `closed (${ev.code})`);
      const retry = async (): Promise<void> => {
        if (ev.code === 4401 && !(await session.refresh())) return; // logged out: the app shows the login
        this.connect();
      };
      this.timer = setTimeout(() => void retry(), ev.code === 4401 ? 0 : this.backoff);
      this.backoff = Math.min(this.backoff * 2, 15_000);
    };
  }
}

export function liveUrl(): string {
  const { protocol, host } = window.location;
  return `${protocol === "https:" ? "wss" : "ws"}://${host}/api/v1/live`;
}
