/**
 * @eventcast/client: subscribe to an eventcast gateway from a browser (or Node with npm `ws`).
 *
 *   import { EventcastClient } from "/client.js";   // served by every gateway, or from npm
 *   const client = new EventcastClient({ url: "https://gw.example.com", channels: ["graph"] });
 *   client.on("event", (e) => render(e));
 *   client.on("resync", () => reloadEverything());
 *   client.connect();
 */
export { EventcastClient } from "./client";
export type {
  ClientEvents,
  ClientOptions,
  DisconnectInfo,
  EventcastEvent,
  State,
  StopInfo,
  Timers,
  Welcome,
} from "./client";
export { DEFAULT_BACKOFF, RETRY_CODES, closeAction, retryDelay } from "./backoff";
export type { BackoffOptions, CloseAction } from "./backoff";
export { CloseCode, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK } from "./codes";
export { SSEParser, closeCodeForStatus } from "./sse";
export type { SSEMessage } from "./sse";
export { endpoint, tokenExpiry } from "./urls";
export type { Filter, Scalar } from "./urls";
export type { FetchFunction, TransportKind, WebSocketConstructor, WebSocketLike } from "./links";
