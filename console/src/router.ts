// Routing in the browser over the History API: gateway_core answers every console path with the page
// (gateway_core/console.py), so a reload or a shared link opens the same view.

import { useEffect, useState } from "preact/hooks";

export interface Route {
  path: string; // "/devices/press-1"
  parts: string[]; // ["devices", "press-1"]
  params: URLSearchParams;
}

function current(): Route {
  const path = window.location.pathname;
  return {
    path,
    parts: path.split("/").filter(Boolean).map(decodeURIComponent),
    params: new URLSearchParams(window.location.search),
  };
}

const listeners = new Set<() => void>();

export function navigate(to: string, replace = false): void {
  if (to === window.location.pathname + window.location.search) return;
  if (replace) window.history.replaceState(null, "", to);
  else window.history.pushState(null, "", to);
  for (const fn of listeners) fn();
}

window.addEventListener("popstate", () => {
  for (const fn of listeners) fn();
});

// Same-origin links move inside the page (a plain click; a modified one opens a tab as usual).
document.addEventListener("click", (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = (ev.target as Element | null)?.closest?.("a");
  if (!a || a.target || a.hasAttribute("download")) return;
  const url = new URL(a.href, window.location.href);
  if (url.origin !== window.location.origin || url.pathname.startsWith("/api/") || url.pathname === "/docs") return;
  ev.preventDefault();
  navigate(url.pathname + url.search);
});

export function useRoute(): Route {
  const [route, setRoute] = useState(current);
  useEffect(() => {
    const fn = (): void => setRoute(current());
    listeners.add(fn);
    return () => listeners.delete(fn);
  }, []);
  return route;
}

export function href(...parts: string[]): string {
  return `/${parts.map(encodeURIComponent).join("/")}`;
}
