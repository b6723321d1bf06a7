// torchport bundle checks shared by the Node.js runner and the browser page (plain ES module: no Node.js APIs).
// checkInputs refuses golden inputs that do not match the inputs the manifest declares, before anything runs:
// otherwise a mismatch surfaces as a runtime's cryptic error, or as numbers computed from misread bytes.

export class Refusal extends Error {}

export const ITEM_BYTES = { float32: 4, float16: 2, int64: 8, int32: 4, uint8: 1 };

const shapeText = (shape) => `[${shape.join(", ")}]`;

export function checkInputs(manifest) {
  const declared = new Map(manifest.inputs.map((spec) => [spec.name, spec]));
  const golden = new Map(manifest.golden.inputs.map((entry) => [entry.name, entry]));
  for (const name of declared.keys()) {
    if (!golden.has(name)) {
      throw new Refusal(`input '${name}': the manifest declares it but golden/ has no tensor of that name; refusing it`);
    }
  }
  for (const [name, entry] of golden) {
    const spec = declared.get(name);
    if (!spec) throw new Refusal(`golden input '${name}' is not among the manifest's inputs; refusing it`);
    if (spec.dtype !== entry.dtype) {
      throw new Refusal(
        `input '${name}': the manifest declares dtype ${spec.dtype}, the golden tensor is ${entry.dtype}; refusing it`,
      );
    }
    const fits = spec.shape.length === entry.shape.length && spec.shape.every((d, i) => d === "batch" || d === entry.shape[i]);
    if (!fits) {
      throw new Refusal(
        `input '${name}': the manifest declares shape ${shapeText(spec.shape)}, the golden tensor is ` +
          `${shapeText(entry.shape)}; refusing it`,
      );
    }
    if (!(entry.dtype in ITEM_BYTES)) throw new Refusal(`dtype ${entry.dtype} is not supported by this runner`);
  }
}

// An output name becomes OUT_DIR/<name>.bin: refuse one that is not a plain file name.
export function checkOutputName(name) {
  if (name === "" || name === "." || name === ".." || /[/\\\0]/.test(name)) {
    throw new Refusal(`output name '${name}' is not a plain file name; refusing it`);
  }
  return name;
}

export function checkSize(entry, byteLength) {
  const need = entry.shape.reduce((a, b) => a * b, 1) * ITEM_BYTES[entry.dtype];
  if (byteLength !== need) {
    throw new Refusal(
      `golden input '${entry.name}' holds ${byteLength} bytes, its shape ${shapeText(entry.shape)} and dtype ` +
        `${entry.dtype} need ${need}; refusing it`,
    );
  }
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
