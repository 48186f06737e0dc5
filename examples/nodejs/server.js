// A Node.js app without dependencies: the nodejs cartridge runs `npm start`.
const http = require("http");

const port = Number(process.env.OPENSHIFT_NODEJS_PORT || process.env.PORT || 8080);
const app = process.env.OPENSHIFT_APP_NAME || "?";

const server = http.createServer((req, res) => {
  const body = `Hello from gearshift (nodejs ${process.version}): app ${app}\n`;
  res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(body) });
  res.end(req.method === "HEAD" ? undefined : body);
});
server.listen(port, "0.0.0.0", () => console.log(`listening on 0.0.0.0:${port}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
