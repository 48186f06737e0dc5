// The build script (`npm run build`), run by the build before the app starts: writes the
// page's banner into dist/, as a bundler would write assets.
const fs = require("fs");
fs.mkdirSync("dist", { recursive: true });
fs.writeFileSync("dist/banner.txt", `built by npm run build with node ${process.version}\n`);
console.log("wrote dist/banner.txt");
