// torchport browser runner: serve index.html, the bundle and onnxruntime-web from 127.0.0.1, open the page in
// headless Chromium, and write the outputs it POSTs back into OUT_DIR (result.json + raw <output>.bin).
// Usage: node browser_server.mjs BUNDLE OUT_DIR [--artifact model.onnx] [--chromium /usr/bin/chromium] [--serve]
// --serve only serves (open the printed URL in any browser yourself). Needs Node.js and onnxruntime-web
// (from $TORCHPORT_NODE_MODULES, or a node_modules folder above this file or the working directory).
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TYPES = { ".html": "text/html", ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
  ".json": "application/json" };
const TIMEOUT_MS = Number(process.env.TORCHPORT_BROWSER_TIMEOUT_MS ?? 90000);

function findDist() {
  const roots = process.env.TORCHPORT_NODE_MODULES ? [process.env.TORCHPORT_NODE_MODULES] : [];
  for (const start of [HERE, process.cwd()]) {
    for (let dir = start; ; dir = path.dirname(dir)) {
      roots.push(path.join(dir, "node_modules"));
      if (path.dirname(dir) === dir) break;
    }
  }
  const found = roots.map((r) => path.join(r, "onnxruntime-web", "dist")).find((d) => existsSync(d));
  if (!found) throw new Error("onnxruntime-web is not installed (npm install onnxruntime-web)");
  return found;
}

function inside(root, relative) {
  const decoded = decodeURIComponent(relative);
  if (decoded.split("/").includes("..") || decoded.includes("\\")) return null;
  const full = path.resolve(root, decoded);
  return full.startsWith(path.resolve(root) + path.sep) ? full : null;
}

function body(request) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    request.on("data", (c) => chunks.push(c));
    request.on("end", () => resolve(Buffer.concat(chunks)));
    request.on("error", reject);
  });
}

async function main() {
  const args = process.argv.slice(2);
  const option = (flag) => {
    const at = args.indexOf(flag);
    return at >= 0 ? args.splice(at, 2)[1] : null;
  };
  const artifact = option("--artifact");
  const chromium = option("--chromium") ?? process.env.CHROMIUM ?? "/usr/bin/chromium";
  const serveOnly = args.includes("--serve") && args.splice(args.indexOf("--serve"), 1);
  if (args.length !== 2) {
    console.error("usage: node browser_server.mjs BUNDLE OUT_DIR [--artifact PATH] [--chromium PATH] [--serve]");
    return 2;
  }
  const [bundle, outDir] = args;
  const dist = findDist();
  let finish;
  const done = new Promise((resolve) => (finish = resolve));

  const server = createServer(async (request, response) => {
    const url = new URL(request.url, "http://127.0.0.1");
    const send = (status, data, type = "text/plain") => {
      response.writeHead(status, { "Content-Type": type, "Cache-Control": "no-store" });
      response.end(data);
    };
    try {
      if (request.method === "POST") {
        const data = await body(request);
        if (url.pathname.startsWith("/output/")) {
          const name = decodeURIComponent(url.pathname.slice("/output/".length));
          if (!/^[\w.-]+$/.test(name)) return send(400, "bad output name");
          mkdirSync(outDir, { recursive: true });
          writeFileSync(path.join(outDir, `${name}.bin`), data);
        } else if (url.pathname === "/result") {
          mkdirSync(outDir, { recursive: true });
          writeFileSync(path.join(outDir, "result.json"), JSON.stringify(JSON.parse(data), null, 2) + "\n");
          finish({ code: 0 });
        } else if (url.pathname === "/error") {
          const error = JSON.parse(data);
          finish({ code: error.refusal ? 2 : 1, message: error.message });
        }
        return send(200, "ok");
      }
      let file = null;
      if (url.pathname === "/" || url.pathname === "/index.html") file = path.join(HERE, "browser_index.html");
      else if (url.pathname === "/bundle_checks.mjs") file = path.join(HERE, "bundle_checks.mjs");
      else if (url.pathname.startsWith("/bundle/")) file = inside(bundle, url.pathname.slice("/bundle/".length));
      else if (url.pathname.startsWith("/ort/")) file = inside(dist, url.pathname.slice("/ort/".length));
      if (!file || !existsSync(file)) return send(404, "not found");
      send(200, readFileSync(file), TYPES[path.extname(file)] ?? "application/octet-stream");
    } catch (error) {
      send(500, String(error));
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const page = `http://127.0.0.1:${server.address().port}/` + (artifact ? `?artifact=${encodeURIComponent(artifact)}` : "");
  if (serveOnly) {
    console.log(`serving ${page} (Ctrl-C to stop)`);
    return await new Promise(() => {});
  }
  const profile = mkdtempSync(path.join(os.tmpdir(), "torchport-chromium-"));
  const flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", `--user-data-dir=${profile}`,
    "--remote-debugging-port=0", page];
  const browser = spawn(chromium, flags, { stdio: ["ignore", "ignore", "pipe"], detached: true });
  let stderr = "";
  browser.stderr.on("data", (c) => (stderr = (stderr + c).slice(-2000)));
  browser.on("error", (error) => finish({ code: 1, message: `cannot start ${chromium}: ${error.message}` }));
  browser.on("exit", (code) => finish({ code: 1, message: `chromium exited (${code}) before the page finished: ${stderr.trim().split("\n").pop()}` }));
  for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => finish({ code: 1, message: `stopped by ${signal}` }));
  const timer = setTimeout(() => finish({ code: 1, message: `the page did not finish within ${TIMEOUT_MS} ms` }), TIMEOUT_MS);
  const outcome = await done;
  clearTimeout(timer);
  browser.removeAllListeners("exit");
  await killGroup(browser.pid, profile);
  server.close();
  server.closeAllConnections?.();
  rmSync(profile, { recursive: true, force: true });
  if (outcome.code !== 0) console.error(`error: ${outcome.message}`);
  else console.log(path.join(outDir, "result.json"));
  return outcome.code;
}

// SIGKILL to the whole process group (Chromium forks renderer and zygote children), then wait, at most 5 s, until
// none of them is left: the signal is delivered asynchronously, and a runner that exited at once could leave a
// Chromium of its own running for a moment, writing into the profile folder about to be removed. Where /proc
// exists a process counts as left while its command line names the profile (a zombie's is empty); elsewhere
// while the group still answers signal 0.
async function killGroup(pid, profile) {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    return;
  }
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && groupLeft(pid, profile)) await new Promise((resolve) => setTimeout(resolve, 20));
}

function groupLeft(pid, profile) {
  if (!existsSync("/proc/self")) {
    try {
      process.kill(-pid, 0);
      return true;
    } catch {
      return false;
    }
  }
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`).includes(profile)) return true;
    } catch {}
  }
  return false;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(`error: ${error.message ?? error}`);
    process.exit(1);
  },
);
