package dev.torchport.runner;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.StringJoiner;

/**
 * A torchport bundle as this runner sees it: manifest.json and the files it names, nothing else. Every file is
 * read through {@link #checkedFile}, which refuses paths that could leave the bundle and bytes whose SHA-256
 * differs from the manifest's.
 */
final class Bundle {
    /** A golden input tensor, checked against the model's declared inputs: raw little-endian row-major bytes. */
    record Input(String name, DType dtype, long[] shape, byte[] data) {}

    private final Path root;
    private final JsonNode manifest;

    private Bundle(Path root, JsonNode manifest) {
        this.root = root;
        this.manifest = manifest;
    }

    static Bundle open(Path root) throws Refusal, IOException {
        Path manifest = root.resolve("manifest.json");
        if (!Files.isRegularFile(manifest)) {
            throw new Refusal(root + " is not a bundle: manifest.json not found");
        }
        try {
            return new Bundle(root, new ObjectMapper().readTree(manifest.toFile()));
        } catch (JsonProcessingException e) {  // Jackson's own message spans lines and quotes the source: keep it short
            String where = e.getLocation() == null ? "" : " (line " + e.getLocation().getLineNr() + ")";
            throw new IOException(manifest + " is not valid JSON: " + e.getOriginalMessage() + where, e);
        }
    }

    /** The artifact named {@code wanted} (a bundle path), or by default the first fp32 ONNX artifact. */
    JsonNode artifact(String wanted) throws Refusal {
        for (JsonNode artifact : field(manifest, "artifacts")) {
            String kind = text(artifact, "kind");
            if (wanted == null ? kind.equals("onnx") && precision(artifact).equals("fp32")
                    : text(artifact, "path").equals(wanted)) {
                if (!kind.equals("onnx")) {
                    throw new Refusal(
                            "the manifest lists no ONNX artifact '" + wanted + "': it is kind '" + kind + "'");
                }
                return artifact;
            }
        }
        throw new Refusal("the manifest lists no ONNX artifact "
                + (wanted == null ? "of precision fp32" : "'" + wanted + "'"));
    }

    /** An artifact's precision field; a missing one means fp32. */
    static String precision(JsonNode artifact) {
        JsonNode precision = artifact.get("precision");
        return precision == null || precision.isNull() ? "fp32" : precision.asText();
    }

    /** The bytes of the file a manifest entry names, once its path and SHA-256 check out. */
    byte[] checkedFile(JsonNode entry) throws Refusal, IOException {
        String relative = text(entry, "path");
        Path path = safePath(relative);
        if (!Files.isRegularFile(path)) {
            throw new Refusal("bundle file '" + relative + "' is missing");
        }
        byte[] bytes = Files.readAllBytes(path);
        String digest = sha256(bytes);
        String expected = text(entry, "sha256");
        if (!digest.equals(expected)) {
            throw new Refusal("bundle file '" + relative + "' fails its checksum: SHA-256 " + digest.substring(0, 12)
                    + "... != manifest " + expected.substring(0, Math.min(12, expected.length())) + "...; refusing it");
        }
        return bytes;
    }

    /** A bundle path under the root; empty, absolute, backslashed or '..' paths are refused before any I/O. */
    Path safePath(String relative) throws Refusal {
        boolean climbs = false;
        for (String part : relative.split("/", -1)) {
            climbs |= part.equals("..");
        }
        if (relative.isEmpty() || relative.startsWith("/") || relative.contains("\\") || climbs
                || Path.of(relative).isAbsolute()) {
            throw new Refusal("bundle path '" + relative + "' is absolute or contains '..'; refusing it");
        }
        return root.resolve(relative);
    }

    /**
     * The golden inputs, in manifest order. All their checksums are verified first; then each is compared with
     * the model's declared inputs (name, dtype, shape with "batch" matching any size >= 1, byte size), so a
     * mismatch is refused here with a clear line rather than surfacing as an ORT error mid-run.
     */
    List<Input> goldenInputs() throws Refusal, IOException {
        JsonNode entries = field(field(manifest, "golden"), "inputs");
        List<byte[]> files = new ArrayList<>();
        for (JsonNode entry : entries) {
            files.add(checkedFile(entry));
        }

        JsonNode declared = field(manifest, "inputs");
        for (JsonNode spec : declared) {
            String name = text(spec, "name");
            if (find(entries, name) == null) {
                throw new Refusal("input '" + name + "': the manifest declares it but golden/ has no tensor of that"
                        + " name; refusing it");
            }
        }
        List<Input> inputs = new ArrayList<>();
        for (int i = 0; i < entries.size(); i++) {
            JsonNode entry = entries.get(i);
            String name = text(entry, "name");
            JsonNode spec = find(declared, name);
            if (spec == null) {
                throw new Refusal("golden input '" + name + "' is not among the manifest's inputs; refusing it");
            }
            String dtype = text(entry, "dtype");
            if (!text(spec, "dtype").equals(dtype)) {
                throw new Refusal("input '" + name + "': the manifest declares dtype " + text(spec, "dtype")
                        + ", the golden tensor is " + dtype + "; refusing it");
            }
            long[] shape = goldenShape(entry, name);
            if (!shapeMatches(field(spec, "shape"), shape)) {
                throw new Refusal("input '" + name + "': the manifest declares shape "
                        + format(field(spec, "shape")) + ", the golden tensor is " + format(shape) + "; refusing it");
            }
            DType type = DType.named(dtype);
            long need = type.itemSize;
            for (long d : shape) {
                need = Math.multiplyExact(need, d);
            }
            byte[] data = files.get(i);
            if (data.length != need) {
                throw new Refusal("golden input '" + name + "' holds " + data.length + " bytes, its shape "
                        + format(shape) + " and dtype " + dtype + " need " + need + "; refusing it");
            }
            inputs.add(new Input(name, type, shape, data));
        }
        return inputs;
    }

    private static boolean shapeMatches(JsonNode declared, long[] shape) {
        if (declared.size() != shape.length) {
            return false;
        }
        for (int i = 0; i < shape.length; i++) {
            JsonNode dim = declared.get(i);
            boolean ok = dim.isTextual() ? dim.asText().equals("batch") && shape[i] >= 1
                    : dim.isIntegralNumber() && dim.asLong() == shape[i];
            if (!ok) {
                return false;
            }
        }
        return true;
    }

    private static long[] goldenShape(JsonNode entry, String name) throws Refusal {
        JsonNode dims = field(entry, "shape");
        long[] shape = new long[dims.size()];
        for (int i = 0; i < shape.length; i++) {
            if (!dims.get(i).isIntegralNumber() || dims.get(i).asLong() < 0) {
                throw new Refusal("manifest.json: golden input '" + name + "' has shape " + dims
                        + "; it needs sizes >= 0");
            }
            shape[i] = dims.get(i).asLong();
        }
        return shape;
    }

    /** A declared shape as the refusals print it: {@code [batch, 1, 8, 8]}, "batch" unquoted. */
    private static String format(JsonNode dims) {
        StringJoiner joined = new StringJoiner(", ", "[", "]");
        for (JsonNode d : dims) {
            joined.add(d.isTextual() ? d.asText() : d.toString());
        }
        return joined.toString();
    }

    static String format(long[] shape) {
        StringJoiner joined = new StringJoiner(", ", "[", "]");
        for (long d : shape) {
            joined.add(Long.toString(d));
        }
        return joined.toString();
    }

    private static JsonNode find(JsonNode specs, String name) throws Refusal {
        for (JsonNode spec : specs) {
            if (text(spec, "name").equals(name)) {
                return spec;
            }
        }
        return null;
    }

    /** A required field: a manifest without it is refused with its name rather than failing on a null. */
    static JsonNode field(JsonNode node, String name) throws Refusal {
        JsonNode value = node.get(name);
        if (value == null || value.isNull()) {
            throw new Refusal("manifest.json: missing field '" + name + "'");
        }
        return value;
    }

    static String text(JsonNode node, String name) throws Refusal {
        return field(node, name).asText();
    }

    private static String sha256(byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("this JVM has no SHA-256", e);  // every Java SE platform must have it
        }
    }
}
