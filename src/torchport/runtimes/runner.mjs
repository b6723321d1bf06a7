// torchport Node.js runner: run a bundle's golden inputs in onnxruntime-node and write the outputs raw.
// Usage: node runner.mjs BUNDLE OUT_DIR [--artifact model.onnx]
// Reads only manifest.json and the files it names; refuses absolute or '..' paths and bad SHA-256s (exit 2).
// onnxruntime-node is resolved from $TORCHPORT_NODE_MODULES when set, else the usual way from this file.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { Refusal, checkInputs, checkOutputName, checkSize, median } from "./bundle_checks.mjs";

const base = process.env.TORCHPORT_NODE_MODULES
  ? path.join(process.env.TORCHPORT_NODE_MODULES, "..", "package.json")
  : import.meta.url;
const require = createRequire(base);

const TYPED = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array, uint8: Uint8Array, float16: Uint16Array };

function safePath(root, relative) {
  if (!relative || path.isAbsolute(relative) || relative.includes("\\") || relative.split("/").includes("..")) {
    throw new Refusal(`bundle path '${relative}' is absolute or contains '..'; refusing it`);
  }
  return path.join(root, relative);
}

function checkedFile(root, entry) {
  const file = safePath(root, entry.path);
  if (!existsSync(file)) throw new Refusal(`bundle file '${entry.path}' is missing`);
  const bytes = readFileSync(file);
  const digest = createHash("sha256").update(bytes).digest("hex");
  if (digest !== entry.sha256) {
    throw new Refusal(
      `bundle file '${entry.path}' fails its checksum: SHA-256 ${digest.slice(0, 12)}... != manifest ` +
        `${entry.sha256.slice(0, 12)}...; refusing it`,
    );
  }
  return bytes;
}

function typedView(bytes, dtype) {
  // copy into an aligned buffer: a Buffer from readFileSync may sit at any offset of a shared pool
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  const Typed = TYPED[dtype];
  if (!Typed) throw new Refusal(`dtype ${dtype} is not supported by this runner`);
  return new Typed(copy.buffer);
}

function sliceBatch(ort, tensor, batch) {
  const per = tensor.dims.slice(1).reduce((a, b) => a * b, 1);
  return new ort.Tensor(tensor.type, tensor.data.slice(0, batch * per), [batch, ...tensor.dims.slice(1)]);
}

async function main() {
  const args = process.argv.slice(2);
  const at = args.indexOf("--artifact");
  const wanted = at >= 0 ? args.splice(at, 2)[1] : null;
  if (args.length !== 2) {
    console.error("usage: node runner.mjs BUNDLE OUT_DIR [--artifact model.onnx]");
    return 2;
  }
  const [root, outDir] = args;
  const manifestPath = path.join(root, "manifest.json");
  if (!existsSync(manifestPath)) throw new Refusal(`${root} is not a bundle: manifest.json not found`);
  const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
  const artifact = manifest.artifacts.find((a) =>
    wanted ? a.path === wanted : a.kind === "onnx" && (a.precision ?? "fp32") === "fp32",
  );
  if (!artifact || artifact.kind !== "onnx") throw new Refusal(`the manifest lists no ONNX artifact ${wanted ?? ""}`);
  const ort = require("onnxruntime-node");
  const model = checkedFile(root, artifact);
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1, executionProviders: ["cpu"] });
  session.outputNames.forEach(checkOutputName);
  const golden = manifest.golden.inputs.map((entry) => [entry, checkedFile(root, entry)]);
  checkInputs(manifest);
  const feeds = {};
  for (const [entry, bytes] of golden) {
    checkSize(entry, bytes.byteLength);
    feeds[entry.name] = new ort.Tensor(entry.dtype, typedView(bytes, entry.dtype), entry.shape);
  }
  const results = await session.run(feeds);

  const total = manifest.golden.inputs[0].shape[0];
  const latency = [];
  for (const [batch, iterations] of [[1, 20], [total, 5]].filter((x, i) => i === 0 || total !== 1)) {
    const feed = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, sliceBatch(ort, t, batch)]));
    await session.run(feed);
    const times = [];
    for (let i = 0; i < iterations; i++) {
      const start = performance.now();
      await session.run(feed);
      times.push(performance.now() - start);
    }
    latency.push({ batch, median_ms: median(times), iterations });
  }

  mkdirSync(outDir, { recursive: true });
  const outputs = [];
  for (const name of session.outputNames) {
    const tensor = results[name];
    const file = `${name}.bin`;
    const data = tensor.data;
    writeFileSync(path.join(outDir, file), Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    outputs.push({ name, path: file, dtype: tensor.type, shape: tensor.dims.map(Number) });
  }
  const version = require("onnxruntime-node/package.json").version;
  const result = {
    runtime: "onnxruntime-node",
    version,
    node: process.version,
    device: "cpu",
    artifact: artifact.path,
    precision: artifact.precision ?? "fp32",
    outputs,
    latency,
  };
  writeFileSync(path.join(outDir, "result.json"), JSON.stringify(result, null, 2) + "\n");
  console.log(path.join(outDir, "result.json"));
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(`error: ${error instanceof Refusal ? error.message : error.stack ?? error}`);
    process.exit(error instanceof Refusal ? 2 : 1);
  },
);
