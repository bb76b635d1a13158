/**
 * When to reconnect, and after how long: pure functions of the close code, the attempt number and a random
 * source, so the rules are tested without a socket or a clock. The Python client (`app/client.py`) follows the
 * same table; docs/clients.md states it once for both.
 */
import { CloseCode } from "./codes";

/** What the client does after a connection ends. */
export type CloseAction = "retry" | "refresh-token" | "stop";

/**
 * Codes after which the client reconnects and resumes: the server going away (drain, shed: 1012), overload
 * (1013), an internal error or keepalive timeout (1011), a slow consumer cut (4008), and the network or a proxy
 * dropping the connection (1006, 1005, 1001).
 */
export const RETRY_CODES: readonly number[] = [
  CloseCode.GOING_AWAY,
  CloseCode.NO_STATUS,
  CloseCode.ABNORMAL,
  CloseCode.INTERNAL_ERROR,
  CloseCode.SERVICE_RESTART,
  CloseCode.TRY_AGAIN_LATER,
  CloseCode.SLOW_CONSUMER,
];

/**
 * The action for a close. 4400 (bad request), 4401 (unauthenticated), 4403 (forbidden) and every code not in
 * RETRY_CODES stop the client: retrying would get the same answer. The one exception is a 4401 whose reason says
 * the token expired: the client asks the application for a fresh token and reconnects with it.
 */
export function closeAction(code: number, reason: string): CloseAction {
  if (code === CloseCode.UNAUTHENTICATED && /expired/i.test(reason)) return "refresh-token";
  return RETRY_CODES.includes(code) ? "retry" : "stop";
}

export interface BackoffOptions {
  /** First delay after an ordinary failure, in ms (doubles with each failed attempt). */
  initialMs: number;
  /** Ceiling of any delay, in ms. */
  maxMs: number;
  /** First delay after 1013 (try again later: the gateway is overloaded), in ms; doubles likewise. */
  overloadMs: number;
  /** Share of each delay that is random, 0..1 ("equal jitter": the delay is in [d * (1 - jitter), d]). */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  initialMs: 500,
  maxMs: 30_000,
  overloadMs: 5_000,
  jitter: 0.5,
};

/**
 * Delay before reconnect number `attempt` (0 for the first after a connection that had been welcomed, 1 after
 * that one failed too, ...). `random` returns a number in [0, 1).
 *
 * - 1012 (drain or shed) on the first attempt: anywhere in [0, initialMs). The server already spreads its closes
 *   over the drain period and another replica is ready, so waiting longer only widens the gap.
 * - 1013 (overload): exponential from overloadMs, so an overloaded gateway is not hammered.
 * - anything else: exponential from initialMs.
 */
export function retryDelay(
  code: number,
  attempt: number,
  options: BackoffOptions,
  random: () => number,
): number {
  if (code === CloseCode.SERVICE_RESTART && attempt === 0) {
    return Math.floor(random() * options.initialMs);
  }
  const first = code === CloseCode.TRY_AGAIN_LATER ? options.overloadMs : options.initialMs;
  const ceiling = Math.min(options.maxMs, first * 2 ** Math.min(attempt, 30));
  const jitter = Math.min(1, Math.max(0, options.jitter));
  return Math.floor(ceiling * (1 - jitter * random()));
}
