// socket.io 4 with @socket.io/redis-adapter in one Node process: a peer of `eventcast bench --peers`.
// PORT and REDIS_URL come from the environment; the bench installs the packages of package.json beside this
// file into its cache and runs `node server.js` with NODE_PATH pointing there.
//   subscribers: ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket (they send "40" to join)
//   publish:     POST /pub/CHANNEL with a JSON body, emitted as the "event" to every connected client
"use strict";
const http = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

async function main() {
  const port = Number(process.env.PORT);
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const server = http.createServer();
  const io = new Server(server, {
    transports: ["websocket"], // the bench's clients speak WebSocket only, as the others'
    serveClient: false,
    perMessageDeflate: false, // no compression on the other servers either
    pingInterval: 600000, // keepalive off for a bench run (the others send none either)
    pingTimeout: 600000,
    maxHttpBufferSize: 1e6,
  });
  io.adapter(createAdapter(pub, sub));
  server.on("request", (req, res) => {
    if (req.url.startsWith("/socket.io/")) return; // socket.io's own
    if (req.method === "GET" && req.url === "/readyz") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("ready\n");
      return;
    }
    const match = /^\/pub\/(\w+)$/.exec(req.url);
    if (req.method !== "POST" || !match) {
      res.writeHead(404);
      res.end();
      return;
    }
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      let data;
      try {
        data = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch (error) {
        res.writeHead(400);
        res.end("body must be JSON\n");
        return;
      }
      io.emit("event", data);
      res.writeHead(202, { "content-type": "application/json" });
      res.end("{}");
    });
  });
  server.listen(port, "127.0.0.1");
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
