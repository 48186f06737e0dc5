// Express on $PORT, started by `npm start` (package.json's start script): no Procfile.
const express = require("express");
const fs = require("fs");
const path = require("path");

const app = express();
const banner = fs.readFileSync(path.join(__dirname, "dist", "banner.txt"), "utf8").trim();

app.get("/", (req, res) => {
  res.type("text/plain").send(`Hello from Express ${require("express/package.json").version}\n${banner}\n`);
});

const port = process.env.PORT || 3000;
app.listen(port, () => console.log(`listening on ${port}`));
