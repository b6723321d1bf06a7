// A plain Node.js client of the v2 (KServe/Triton REST) server, using nothing but the built-in global `fetch`.
//
//   node node_fetch_client.mjs PORT MODEL INPUTS_JSON [OUT_JSON]
//
// INPUTS_JSON: {"inputs": [{"name", "datatype": "FP32", "shape", "data": [flat numbers]}], "outputs": [names]}.
// It asks /v2/health/live, /v2/health/ready and /v2/models/MODEL, then infers twice: once with JSON tensors, once
// with the binary tensor extension (a JSON header of Inference-Header-Content-Length bytes followed by the raw
// little-endian tensors, binary outputs requested with parameters.binary_data_output). It writes what it saw as
// JSON to OUT_JSON, or to stdout without one. Exit code 0 whatever the server answered; 1 on a client error.

import { readFileSync, writeFileSync } from "node:fs";

const [port, model, inputsPath, outPath] = process.argv.slice(2);
if (!port || !model || !inputsPath) {
  console.error("usage: node node_fetch_client.mjs PORT MODEL INPUTS_JSON [OUT_JSON]");
  process.exit(2);
}
const base = `http://127.0.0.1:${port}`;
const request = JSON.parse(readFileSync(inputsPath, "utf8"));

// datatype -> [bytes per element, DataView getter, DataView setter]
const CODECS = {
  FP32: [4, "getFloat32", "setFloat32"],
  FP64: [8, "getFloat64", "setFloat64"],
  INT32: [4, "getInt32", "setInt32"],
  INT64: [8, "getBigInt64", "setBigInt64"],
};

function codec(datatype) {
  const found = CODECS[datatype];
  if (!found) throw new Error(`datatype ${datatype} is not supported by this client`);
  return found;
}

function encode(datatype, values) {
  const [size, , setter] = codec(datatype);
  const view = new DataView(new ArrayBuffer(values.length * size));
  values.forEach((value, i) => view[setter](i * size, datatype === "INT64" ? BigInt(value) : value, true));
  return new Uint8Array(view.buffer);
}

function decode(datatype, bytes) {
  const [size, getter] = codec(datatype);
  if (bytes.byteLength % size !== 0) throw new Error(`${bytes.byteLength} bytes is not a whole number of ${datatype}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const values = [];
  for (let offset = 0; offset < bytes.byteLength; offset += size) {
    const value = view[getter](offset, true);
    values.push(typeof value === "bigint" ? Number(value) : value);
  }
  return values;
}

async function getJson(path) {
  const response = await fetch(base + path);
  return { status: response.status, content_type: response.headers.get("content-type"), body: await response.json() };
}

async function inferJson() {
  const body = {
    id: "node-json",
    inputs: request.inputs,
    outputs: request.outputs.map((name) => ({ name })),
  };
  const response = await fetch(`${base}/v2/models/${model}/infer`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, content_type: response.headers.get("content-type"), body: await response.json() };
}

// Parses a binary-extension response: the JSON header, then each binary output's bytes in output order.
function parseBinaryResponse(bytes, headerLength) {
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(0, headerLength)));
  const outputs = {};
  let offset = headerLength;
  for (const output of header.outputs) {
    const size = output.parameters?.binary_data_size;
    if (size === undefined) {
      outputs[output.name] = { shape: output.shape, datatype: output.datatype, data: output.data, binary: false };
      continue;
    }
    if (offset + size > bytes.byteLength) throw new Error(`output ${output.name} runs past the end of the body`);
    const data = decode(output.datatype, bytes.subarray(offset, offset + size));
    outputs[output.name] = { shape: output.shape, datatype: output.datatype, data, binary: true };
    offset += size;
  }
  if (offset !== bytes.byteLength) throw new Error(`${bytes.byteLength - offset} unclaimed bytes after the outputs`);
  return { header, outputs };
}

async function inferBinary() {
  const blobs = [];
  const inputs = request.inputs.map(({ data, ...tensor }) => {
    const blob = encode(tensor.datatype, data);
    blobs.push(blob);
    return { ...tensor, parameters: { binary_data_size: blob.byteLength } };
  });
  // every output binary by default; the last one asked back as JSON, to exercise a mixed response
  const outputs = request.outputs.map((name, i) =>
    i === request.outputs.length - 1 && request.outputs.length > 1
      ? { name, parameters: { binary_data: false } }
      : { name },
  );
  const header = new TextEncoder().encode(
    JSON.stringify({ id: "node-binary", parameters: { binary_data_output: true }, inputs, outputs }),
  );
  const body = new Uint8Array(header.byteLength + blobs.reduce((sum, blob) => sum + blob.byteLength, 0));
  body.set(header, 0);
  let offset = header.byteLength;
  for (const blob of blobs) {
    body.set(blob, offset);
    offset += blob.byteLength;
  }
  const response = await fetch(`${base}/v2/models/${model}/infer`, {
    method: "POST",
    headers: {
      "Content-Type": "application/octet-stream",
      "Inference-Header-Content-Length": String(header.byteLength),
    },
    body,
  });
  const bytes = new Uint8Array(await response.arrayBuffer());
  const lengthHeader = response.headers.get("inference-header-content-length");
  const result = {
    status: response.status,
    content_type: response.headers.get("content-type"),
    header_length: lengthHeader,
    body_bytes: bytes.byteLength,
  };
  if (lengthHeader === null) {
    return { ...result, body: JSON.parse(new TextDecoder().decode(bytes)) };
  }
  return { ...result, ...parseBinaryResponse(bytes, Number.parseInt(lengthHeader, 10)) };
}

try {
  const results = {
    node: process.version,
    live: await getJson("/v2/health/live"),
    ready: await getJson("/v2/health/ready"),
    metadata: await getJson(`/v2/models/${model}`),
    json_infer: await inferJson(),
    binary_infer: await inferBinary(),
  };
  const text = JSON.stringify(results);
  if (outPath) writeFileSync(outPath, text);
  else process.stdout.write(text + "\n");
} catch (error) {
  console.error(`client error: ${error?.stack ?? error}`);
  process.exit(1);
}
