// Notes kept in a linked Redis add-on, through REDIS_URL (npm `redis`).
//   GET /                lists the notes
//   GET /add?note=TEXT   adds one (in Redis's append-only file before the answer)
const http = require("http");
const { createClient } = require("redis");

const port = Number(process.env.PORT || 8080);
const client = createClient({
  url: process.env.REDIS_URL,
  socket: { connectTimeout: 5000, reconnectStrategy: (n) => Math.min(n * 100, 1000) },
});
client.on("error", (e) => console.error("redis:", e.message));
client.connect().catch((e) => console.error("redis connect:", e.message));

// Commands wait while the client (re)connects; a request gives up after 5 s.
function within(ms, p) {
  return Promise.race([p, new Promise((_, no) => setTimeout(() => no(new Error(`no answer from redis in ${ms} ms`)), ms))]);
}

async function answer(req) {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/add") await client.rPush("notes", url.searchParams.get("note") || "");
  return "notes: " + (await client.lRange("notes", 0, -1)).join(",") + "\n";
}

const server = http.createServer((req, res) => {
  within(5000, answer(req)).then(
    (body) => {
      res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" });
      res.end(body);
    },
    (e) => {
      res.writeHead(503, { "Content-Type": "text/plain; charset=utf-8" });
      res.end(`redis error: ${e.message} (is REDIS_URL set? ${process.env.REDIS_URL ? "yes" : "no"})\n`);
    }
  );
});
server.listen(port, "0.0.0.0", () => console.log(`listening on 0.0.0.0:${port}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
