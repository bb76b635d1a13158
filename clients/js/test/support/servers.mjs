// Real processes for the JavaScript tests: eventcast gateways (`python -m app.cli serve`) and redis-servers,
// each on a free loopback port, stopped by their PID. Python comes from the repository's .venv (`make venv`)
// or EVENTCAST_PYTHON.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { createHmac } from "node:crypto";

const ADMIN_TOKEN = "js-test-admin-token";
export const REPO = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..");

export function python() {
  const given = process.env.EVENTCAST_PYTHON ?? join(REPO, ".venv", "bin", "python");
  if (!existsSync(given)) {
    throw new Error(`no Python for the gateway at ${given}: run \`make venv\` or set EVENTCAST_PYTHON`);
  }
  return given;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export async function waitFor(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await predicate()) return;
    } catch (error) {
      last = error;
    }
    await sleep(50);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (${last})` : ""}`);
}

function exited(child) {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitExit(child, timeoutMs) {
  if (exited(child)) return Promise.resolve();
  return Promise.race([
    new Promise((resolve) => child.once("exit", resolve)),
    sleep(timeoutMs).then(() => {
      throw new Error(`process ${child.pid} did not exit within ${timeoutMs} ms`);
    }),
  ]);
}

/** An `eventcast serve` process; start() again after stop()/terminate() reuses its port. */
export class Gateway {
  constructor({ broker = "memory://", env = {}, name } = {}) {
    this.broker = broker;
    this.env = env;
    this.name = name;
    this.port = null;
    this.child = null;
    this.output = "";
  }

  get http() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    this.port ??= await freePort();
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("EVENTCAST_")));
    Object.assign(env, {
      EVENTCAST_REPLICA: this.name ?? `gw-${this.port}`,
      EVENTCAST_LOG_LEVEL: "warning",
      EVENTCAST_DRAIN_SECONDS: "0.5",
      EVENTCAST_ADMIN_TOKEN: ADMIN_TOKEN, // /admin/* is closed on the public port without one
      ...this.env,
    });
    const args = ["-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", String(this.port), "--broker", this.broker];
    const child = spawn(python(), args, { cwd: REPO, env, stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    const keep = (chunk) => {
      this.output = (this.output + chunk).slice(-20_000);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    await waitFor(
      async () => {
        if (exited(child)) throw new Error(`gateway exited:\n${this.output}`);
        return (await fetch(`${this.http}/readyz`)).status === 200;
      },
      30_000,
      `gateway ${this.http}/readyz\n${this.output}`,
    );
    return this;
  }

  /** SIGTERM, as Kubernetes sends it: the gateway drains (1012 to every client), then exits. */
  async terminate() {
    if (this.child && !exited(this.child)) {
      this.child.kill("SIGTERM");
      await waitExit(this.child, 30_000);
    }
  }

  async stop() {
    if (this.child && !exited(this.child)) {
      this.child.kill("SIGKILL");
      await waitExit(this.child, 10_000);
    }
  }

  async publish(events, headers = {}) {
    const response = await fetch(`${this.http}/events`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(events),
    });
    const body = await response.json();
    if (response.status !== 202) throw new Error(`publish: ${response.status} ${JSON.stringify(body)}`);
    return body.ids;
  }

  async shed(fraction = 1) {
    const response = await fetch(`${this.http}/admin/shed`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN_TOKEN}` },
      body: JSON.stringify({ fraction }),
    });
    if (response.status !== 202) throw new Error(`shed: ${response.status}`);
    return (await response.json()).shed;
  }

  async connections() {
    const stats = await (await fetch(`${this.http}/console/stats`)).json();
    return stats.connections;
  }
}

/** A redis-server of our own that a test can kill and start again, empty. */
export class RedisServer {
  constructor() {
    this.port = null;
    this.dir = null;
    this.child = null;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}/0`;
  }

  async start() {
    this.port ??= await freePort();
    this.dir = mkdtempSync(join(tmpdir(), "eventcast-js-redis-"));
    const args = ["--bind", "127.0.0.1", "--port", String(this.port), "--save", "", "--appendonly", "no", "--dir", this.dir, "--daemonize", "no"];
    const child = spawn("redis-server", args, { stdio: "ignore" });
    this.child = child;
    let failure = null;
    child.once("error", (error) => {
      failure = error;
    });
    await waitFor(
      () => {
        if (failure) throw new Error(`redis-server did not start (${failure.message}): run \`make system-deps\``);
        return pong(this.port);
      },
      10_000,
      `redis-server on ${this.port}`,
    );
    return this;
  }

  async stop() {
    if (this.child && !exited(this.child)) {
      this.child.kill("SIGKILL");
      await waitExit(this.child, 10_000);
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }

  /** Kill it and start it again with nothing in it: history is lost. */
  async restartEmpty() {
    await this.stop();
    await this.start();
  }
}

async function pong(port) {
  const { connect } = await import("node:net");
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("error", () => resolve(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.once("data", (data) => {
      socket.destroy();
      resolve(data.toString().startsWith("+PONG"));
    });
  });
}

/** An HS256 JWT (what the gateway checks with EVENTCAST_JWT_SECRET). */
export function jwt(secret, claims) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

export function readJson(path) {
  return JSON.parse(readFileSync(path, "utf8"));
}
