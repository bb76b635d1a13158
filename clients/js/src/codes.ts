/**
 * Close codes of the eventcast protocol (DESIGN 5b; the server's `app/causes.py` `CloseCode`).
 * A test on the Python side checks that these numbers are the server's.
 */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  NO_STATUS: 1005,
  ABNORMAL: 1006,
  PROTOCOL_ERROR: 1002,
  INVALID_DATA: 1007,
  POLICY: 1008,
  TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  BAD_REQUEST: 4400,
  UNAUTHENTICATED: 4401,
  FORBIDDEN: 4403,
  SLOW_CONSUMER: 4008,
} as const;

/** Subprotocols the gateway speaks: the frame encoding. */
export const SUBPROTOCOL_JSON = "eventcast.v1.json";
export const SUBPROTOCOL_MSGPACK = "eventcast.v1.msgpack";
export const WELCOME_TYPE = "eventcast.welcome";
/** The SSE event the server sends when it ends a stream (code and reason, as on WebSocket). */
export const SSE_CLOSE_TYPE = "eventcast.close";
