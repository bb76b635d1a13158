/** Gateway URLs: the subscriber endpoints with their query (DESIGN section 2). */
import type { TransportKind } from "./links";

export type Scalar = string | number | boolean | null;

/** A server-side filter: type globs (any may match) and equality on top-level fields of `data`. */
export interface Filter {
  types?: string[];
  where?: Record<string, Scalar>;
}

export function filterIsEmpty(filter: Filter | undefined): boolean {
  return !filter || ((filter.types ?? []).length === 0 && Object.keys(filter.where ?? {}).length === 0);
}

export interface Subscription {
  channels: string[];
  filter?: Filter;
  since?: string | null;
  token?: string | null;
}

/** The gateway's base URL from what the application gave (http, https, ws or wss), or the page's origin. */
export function baseUrl(given: string | undefined): URL {
  const location = (globalThis as { location?: { href?: string } }).location;
  if (given === undefined && location?.href === undefined) {
    throw new TypeError("eventcast: pass `url` (the gateway's base URL) outside a browser page");
  }
  const url = new URL(given ?? "/", location?.href);
  if (!["http:", "https:", "ws:", "wss:"].includes(url.protocol)) {
    throw new TypeError(`eventcast: url must be http(s) or ws(s), not ${url.protocol}`);
  }
  return url;
}

/** The subscriber URL for one connection attempt. */
export function endpoint(base: URL, kind: TransportKind, subscription: Subscription): string {
  const url = new URL(base.href);
  const secure = url.protocol === "https:" || url.protocol === "wss:";
  url.protocol = kind === "websocket" ? (secure ? "wss:" : "ws:") : secure ? "https:" : "http:";
  const prefix = url.pathname.replace(/\/+$/, "");
  const filtered = !filterIsEmpty(subscription.filter);
  url.pathname = `${prefix}/${kind === "sse" ? "sse" : "ws"}/events${filtered ? "/filtered" : ""}`;
  const query = new URLSearchParams();
  query.set("channels", subscription.channels.join(","));
  const types = subscription.filter?.types ?? [];
  if (types.length > 0) query.set("types", types.join(","));
  for (const [field, value] of Object.entries(subscription.filter?.where ?? {})) {
    query.append("where", `${field}=${typeof value === "string" ? value : JSON.stringify(value)}`);
  }
  if (subscription.since) query.set("since", subscription.since);
  // Browsers cannot set headers on a WebSocket, and fetch would need a CORS preflight for one: the query it is.
  if (subscription.token) query.set("token", subscription.token);
  url.search = query.toString();
  url.hash = "";
  return url.href;
}

/** The `exp` of a JWT in ms since the epoch, or null when the token is not a JWT with one. */
export function tokenExpiry(token: string): number | null {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(json) as { exp?: unknown };
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}
