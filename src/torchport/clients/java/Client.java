// torchport Open Inference Protocol v2 client (Java, JDK only: no jars, no build tool).
//
// Usage (Java's single-file source launcher, JDK 11+):
//     java Client.java BUNDLE URL OUT_DIR [--api-key KEY]
// or compiled once for a faster start:
//     javac -d classes Client.java && java -cp classes Client BUNDLE URL OUT_DIR [--api-key KEY]
//
// Calls a running `torchport serve` at URL (e.g. http://127.0.0.1:8000) with the golden inputs of BUNDLE, once as a
// JSON request and once with Triton's binary tensor extension, and checks both answers against the golden outputs
// (|got - want| <= atol + rtol * |want|). It then times the binary request at batch 1 and at the full golden
// batch, and writes OUT_DIR/<output>.bin (raw little-endian bytes of the binary answer) and OUT_DIR/result.json,
// whose path it prints on stdout. It reads only BUNDLE/manifest.json and the files it names.
//
// --api-key KEY (or $TORCHPORT_API_KEY when the flag is absent) is sent as "Authorization: Bearer KEY".
//
// Exit codes, with exactly one "error: ..." line on stderr on failure:
//     0  success
//     1  the server failed: HTTP error, unreachable, timeout, an answer that differs from golden
//     2  wrong arguments ("usage: ..."), or the bundle is refused (unsafe path, checksum, dtype/shape mismatch)

import java.io.IOException;
import java.math.BigDecimal;
import java.math.MathContext;
import java.net.ConnectException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpConnectTimeoutException;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.UnresolvedAddressException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.StringJoiner;

public final class Client {
    static final String USAGE = "usage: java Client.java BUNDLE URL OUT_DIR [--api-key KEY]";
    static final int FAILED = 1;   // the server or its answers
    static final int REFUSED = 2;  // arguments or the bundle
    static final Duration TIMEOUT = Duration.ofSeconds(30);
    static final int BATCH1_RUNS = 20;
    static final int FULL_BATCH_RUNS = 5;

    /** A failure with its exit code; main prints its message as the one "error: ..." line. */
    static final class Fail extends Exception {
        private static final long serialVersionUID = 1L;
        final int code;

        Fail(int code, String message) {
            super(message);
            this.code = code;
        }
    }

    public static void main(String[] args) {
        int code;
        try {
            code = run(args);
        } catch (Fail f) {
            System.err.println("error: " + oneLine(f.getMessage()));
            code = f.code;
        } catch (Throwable t) {  // a bug or a broken JVM: still one line, never a stack trace
            System.err.println("error: unexpected " + t.getClass().getSimpleName() + ": " + oneLine(String.valueOf(t.getMessage())));
            code = FAILED;
        }
        System.exit(code);
    }

    static int run(String[] args) throws Fail, IOException {
        // ---- command line
        List<String> positional = new ArrayList<>();
        String apiKey = null;
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("-h") || args[i].equals("--help")) {
                System.out.println(USAGE);
                return 0;
            } else if (args[i].equals("--api-key") && i + 1 < args.length) {
                apiKey = args[++i];
            } else if (args[i].startsWith("--api-key=")) {
                apiKey = args[i].substring("--api-key=".length());
            } else if (args[i].startsWith("--")) {
                positional.clear();  // an unknown option or a --api-key without its value: show the usage
                break;
            } else {
                positional.add(args[i]);
            }
        }
        if (positional.size() != 3) {
            System.err.println(USAGE);
            return REFUSED;
        }
        if (apiKey == null) {
            String env = System.getenv("TORCHPORT_API_KEY");
            apiKey = env == null || env.isEmpty() ? null : env;
        }
        Path bundleDir = Path.of(positional.get(0));
        String url = positional.get(1).endsWith("/") ? positional.get(1).substring(0, positional.get(1).length() - 1)
                : positional.get(1);
        Path outDir = Path.of(positional.get(2));

        // ---- the bundle: manifest, golden files, tolerances
        Bundle bundle = Bundle.open(bundleDir);
        Server server = new Server(url, bundle.name, apiKey);
        List<String> outputNames = bundle.outputNames;

        // ---- request A: JSON
        Answer json = server.infer(jsonRequest(bundle.inputs), "application/json", null);
        Map<String, Tensor> jsonOutputs = readJsonAnswer(json.body, "json");
        compare("json", jsonOutputs, bundle.goldenOutputs, bundle.atol, bundle.rtol);

        // ---- request B: binary tensor extension
        Request binaryRequest = binaryRequest(bundle.inputs, outputNames);
        Answer binary = server.infer(binaryRequest.body, "application/octet-stream", binaryRequest.headerLength);
        BinaryAnswer full = readBinaryAnswer(binary, "binary");
        compare("binary", full.outputs, bundle.goldenOutputs, bundle.atol, bundle.rtol);

        // ---- latency: batch 1 (first sample of every input), then the full golden batch
        List<Map<String, Object>> latency = new ArrayList<>();
        List<Tensor> firstSample = new ArrayList<>();
        for (Tensor input : bundle.inputs) {
            firstSample.add(input.hasBatch ? input.firstSample() : input);
        }
        latency.add(time(server, binaryRequest(firstSample, outputNames), 1, BATCH1_RUNS));
        if (bundle.batch != 1) {
            latency.add(time(server, binaryRequest, bundle.batch, FULL_BATCH_RUNS));
        }

        // ---- OUT_DIR: <output>.bin per output and result.json
        try {
            Files.createDirectories(outDir);
        } catch (IOException e) {
            throw new Fail(FAILED, "cannot create " + outDir + ": " + reason(e));
        }
        List<Object> outputs = new ArrayList<>();
        for (Tensor out : full.outputs.values()) {
            String file = out.name + ".bin";
            if (out.name.isEmpty() || out.name.contains("/") || out.name.contains("\\") || out.name.equals(".")
                    || out.name.equals("..")) {
                throw new Fail(FAILED, "output name '" + out.name + "' is not a plain file name; refusing to write it");
            }
            write(outDir.resolve(file), out.bytes());
            outputs.add(object("name", out.name, "path", file, "dtype", out.dtype.name, "shape", shapeList(out.shape)));
        }
        Map<String, Object> result = object(
                "runtime", "v2-java",
                "version", "Java " + System.getProperty("java.version"),
                "device", "server",
                "artifact", "model.onnx",
                "precision", "fp32",
                "server", url,
                "model_version", full.modelVersion,
                "outputs", outputs,
                "latency", latency);
        Path resultPath = outDir.resolve("result.json");
        write(resultPath, (Json.write(result, true) + "\n").getBytes(StandardCharsets.UTF_8));
        System.out.println(resultPath);
        return 0;
    }

    // ============================================================================================ the bundle

    /** manifest.json and the golden tensors it names, every path and SHA-256 checked. */
    static final class Bundle {
        final Path root;
        String name;
        final List<Tensor> inputs = new ArrayList<>();         // golden inputs, in manifest order
        final List<Tensor> goldenOutputs = new ArrayList<>();
        final List<String> outputNames = new ArrayList<>();    // the model's outputs, as the manifest lists them
        double atol = 1e-4;
        double rtol = 1e-3;
        long batch = 1;

        private Bundle(Path root) {
            this.root = root;
        }

        static Bundle open(Path root) throws Fail {
            Bundle bundle = new Bundle(root);
            Path manifestPath = root.resolve("manifest.json");
            if (!Files.isRegularFile(manifestPath)) {
                throw new Fail(REFUSED, root + " is not a bundle: manifest.json not found");
            }
            Map<String, Object> manifest;
            try {
                manifest = asObject(Json.parse(new String(Files.readAllBytes(manifestPath), StandardCharsets.UTF_8)),
                        "manifest.json");
            } catch (IOException e) {
                throw new Fail(REFUSED, "cannot read " + manifestPath + ": " + reason(e));
            } catch (Json.Error e) {
                throw new Fail(REFUSED, manifestPath + " is not valid JSON: " + e.getMessage());
            }
            bundle.name = text(manifest, "name", "manifest.json");
            for (Object spec : list(manifest, "outputs", "manifest.json")) {
                bundle.outputNames.add(text(asObject(spec, "manifest.json outputs[]"), "name", "manifest.json outputs[]"));
            }
            bundle.readTolerances(manifest);

            Map<String, Object> golden = asObject(field(manifest, "golden", "manifest.json"), "manifest.json golden");
            List<Object> inputEntries = list(golden, "inputs", "manifest.json golden");
            List<Object> outputEntries = list(golden, "outputs", "manifest.json golden");
            List<byte[]> inputFiles = new ArrayList<>();
            for (Object entry : inputEntries) {  // every path and checksum before looking inside any file
                inputFiles.add(bundle.checkedFile(asObject(entry, "manifest.json golden.inputs[]")));
            }
            List<byte[]> outputFiles = new ArrayList<>();
            for (Object entry : outputEntries) {
                outputFiles.add(bundle.checkedFile(asObject(entry, "manifest.json golden.outputs[]")));
            }
            bundle.readInputs(list(manifest, "inputs", "manifest.json"), inputEntries, inputFiles);
            for (int i = 0; i < outputEntries.size(); i++) {
                Map<String, Object> entry = asObject(outputEntries.get(i), "");
                String name = text(entry, "name", "manifest.json golden.outputs[]");
                bundle.goldenOutputs.add(tensor(entry, name, "golden output", outputFiles.get(i)));
            }
            return bundle;
        }

        /** The verification entry of model.onnx judged by parity gives atol/rtol; otherwise 1e-4 / 1e-3. */
        private void readTolerances(Map<String, Object> manifest) throws Fail {
            Object entries = manifest.get("verification");
            if (!(entries instanceof List)) {
                return;
            }
            for (Object item : (List<?>) entries) {
                if (item instanceof Map) {
                    Map<?, ?> entry = (Map<?, ?>) item;
                    if ("model.onnx".equals(entry.get("artifact")) && "parity".equals(entry.get("judged_by"))) {
                        if (!(entry.get("atol") instanceof Number) || !(entry.get("rtol") instanceof Number)) {
                            throw new Fail(REFUSED, "manifest.json: the model.onnx parity verification has no numeric atol/rtol");
                        }
                        atol = ((Number) entry.get("atol")).doubleValue();
                        rtol = ((Number) entry.get("rtol")).doubleValue();
                        return;
                    }
                }
            }
        }

        /** Golden inputs checked against the model's declared inputs: names, dtype, shape ("batch" >= 1). */
        private void readInputs(List<Object> declared, List<Object> entries, List<byte[]> files) throws Fail {
            Map<String, Map<String, Object>> specs = new LinkedHashMap<>();
            for (Object spec : declared) {
                Map<String, Object> s = asObject(spec, "manifest.json inputs[]");
                specs.put(text(s, "name", "manifest.json inputs[]"), s);
            }
            List<String> goldenNames = new ArrayList<>();
            for (Object entry : entries) {
                goldenNames.add(text(asObject(entry, ""), "name", "manifest.json golden.inputs[]"));
            }
            for (String name : specs.keySet()) {
                if (!goldenNames.contains(name)) {
                    throw new Fail(REFUSED, "input '" + name + "': the manifest declares it but golden/ has no tensor"
                            + " of that name; refusing it");
                }
            }
            Long seenBatch = null;
            for (int i = 0; i < entries.size(); i++) {
                Map<String, Object> entry = asObject(entries.get(i), "");
                String name = goldenNames.get(i);
                Map<String, Object> spec = specs.get(name);
                if (spec == null) {
                    throw new Fail(REFUSED, "golden input '" + name + "' is not among the manifest's inputs; refusing it");
                }
                String declaredType = text(spec, "dtype", "manifest.json input '" + name + "'");
                String goldenType = text(entry, "dtype", "manifest.json golden input '" + name + "'");
                if (!declaredType.equals(goldenType)) {
                    throw new Fail(REFUSED, "input '" + name + "': the manifest declares dtype " + declaredType
                            + ", the golden tensor is " + goldenType + "; refusing it");
                }
                Tensor tensor = tensor(entry, name, "golden input", files.get(i));
                List<Object> dims = list(spec, "shape", "manifest.json input '" + name + "'");
                boolean matches = dims.size() == tensor.shape.length;
                for (int d = 0; matches && d < dims.size(); d++) {
                    Object dim = dims.get(d);
                    matches = "batch".equals(dim) ? tensor.shape[d] >= 1
                            : dim instanceof Long && (Long) dim == tensor.shape[d];
                }
                if (!matches) {
                    throw new Fail(REFUSED, "input '" + name + "': the manifest declares shape " + formatDims(dims)
                            + ", the golden tensor is " + format(tensor.shape) + "; refusing it");
                }
                tensor.hasBatch = !dims.isEmpty() && "batch".equals(dims.get(0));
                if (tensor.hasBatch) {
                    if (seenBatch != null && seenBatch != tensor.shape[0]) {
                        throw new Fail(REFUSED, "the golden inputs disagree on the batch size: " + seenBatch + " and "
                                + tensor.shape[0] + "; refusing them");
                    }
                    seenBatch = tensor.shape[0];
                }
                inputs.add(tensor);
            }
            batch = seenBatch == null ? 1 : seenBatch;
        }

        /** The bytes of the file a manifest entry names, once its path is safe and its SHA-256 matches. */
        private byte[] checkedFile(Map<String, Object> entry) throws Fail {
            String relative = text(entry, "path", "manifest.json golden entry");
            boolean climbs = false;
            for (String part : relative.split("/", -1)) {
                climbs |= part.equals("..");
            }
            if (relative.isEmpty() || relative.startsWith("/") || relative.contains("\\") || climbs
                    || Path.of(relative).isAbsolute() || relative.matches("^[A-Za-z]:.*")) {
                throw new Fail(REFUSED, "bundle path '" + relative + "' is absolute or contains '..'; refusing it");
            }
            Path path = root.resolve(relative);
            if (!Files.isRegularFile(path)) {
                throw new Fail(REFUSED, "bundle file '" + relative + "' is missing; refusing the bundle");
            }
            byte[] bytes;
            try {
                bytes = Files.readAllBytes(path);
            } catch (IOException e) {
                throw new Fail(REFUSED, "cannot read bundle file '" + relative + "': " + reason(e));
            }
            String digest = sha256(bytes);
            String expected = text(entry, "sha256", "manifest.json entry '" + relative + "'").toLowerCase();
            if (!digest.equals(expected)) {
                throw new Fail(REFUSED, "bundle file '" + relative + "' fails its checksum: SHA-256 "
                        + digest.substring(0, 12) + "... != manifest "
                        + expected.substring(0, Math.min(12, expected.length())) + "...; refusing it");
            }
            return bytes;
        }

        /** A golden entry's bytes as a tensor, after checking that its dtype and shape account for every byte. */
        private static Tensor tensor(Map<String, Object> entry, String name, String what, byte[] data) throws Fail {
            String where = "manifest.json " + what + " '" + name + "'";
            DType dtype = DType.named(text(entry, "dtype", where));
            if (dtype == null) {
                throw new Fail(REFUSED, what + " '" + name + "': dtype '" + entry.get("dtype") + "' is not one of "
                        + DType.names() + "; refusing it");
            }
            List<Object> dims = list(entry, "shape", where);
            long[] shape = new long[dims.size()];
            long need = dtype.size;
            for (int d = 0; d < shape.length; d++) {
                if (!(dims.get(d) instanceof Long) || (Long) dims.get(d) < 0) {
                    throw new Fail(REFUSED, where + " has shape " + formatDims(dims) + "; it needs sizes >= 0");
                }
                shape[d] = (Long) dims.get(d);
                need = Math.multiplyExact(need, shape[d]);
            }
            if (data.length != need) {
                throw new Fail(REFUSED, what + " '" + name + "' holds " + data.length + " bytes, its shape "
                        + format(shape) + " and dtype " + dtype.name + " need " + need + "; refusing it");
            }
            return new Tensor(name, dtype, shape, data);
        }
    }

    // ============================================================================================ tensors

    /** The dtypes a bundle may use, with their v2 datatype names and item sizes. */
    enum DType {
        FLOAT32("float32", "FP32", 4), FLOAT16("float16", "FP16", 2), INT64("int64", "INT64", 8),
        INT32("int32", "INT32", 4), UINT8("uint8", "UINT8", 1);

        final String name;
        final String datatype;
        final int size;

        DType(String name, String datatype, int size) {
            this.name = name;
            this.datatype = datatype;
            this.size = size;
        }

        static DType named(String name) {
            for (DType t : values()) {
                if (t.name.equals(name)) {
                    return t;
                }
            }
            return null;
        }

        static DType ofDatatype(String datatype) {
            for (DType t : values()) {
                if (t.datatype.equals(datatype)) {
                    return t;
                }
            }
            return null;
        }

        static String names() {
            StringJoiner joined = new StringJoiner(", ");
            for (DType t : values()) {
                joined.add(t.name);
            }
            return joined.toString();
        }
    }

    /** A tensor: raw little-endian row-major bytes, or (from a JSON answer) just its values. */
    static final class Tensor {
        final String name;
        final DType dtype;
        final long[] shape;
        final byte[] data;      // null for a tensor read from JSON numbers
        final double[] values;  // null for a tensor read from bytes
        boolean hasBatch;       // its first axis is the manifest's "batch"

        Tensor(String name, DType dtype, long[] shape, byte[] data) {
            this(name, dtype, shape, data, null);
        }

        Tensor(String name, DType dtype, long[] shape, byte[] data, double[] values) {
            this.name = name;
            this.dtype = dtype;
            this.shape = shape;
            this.data = data;
            this.values = values;
        }

        int count() {
            return values != null ? values.length : data.length / dtype.size;
        }

        double value(int i) {
            if (values != null) {
                return values[i];
            }
            ByteBuffer b = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
            switch (dtype) {
                case FLOAT32: return b.getFloat(i * 4);
                case FLOAT16: return halfToFloat(b.getShort(i * 2));
                case INT64: return b.getLong(i * 8);
                case INT32: return b.getInt(i * 4);
                default: return data[i] & 0xff;
            }
        }

        /** The values as a JSON array, written as this dtype's exact numbers (floats in their shortest form). */
        Json.Raw jsonData() {
            StringBuilder out = new StringBuilder(count() * 12).append('[');
            ByteBuffer b = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
            for (int i = 0; i < count(); i++) {
                if (i > 0) {
                    out.append(',');
                }
                switch (dtype) {
                    case FLOAT32: out.append(Float.toString(b.getFloat(i * 4))); break;
                    case FLOAT16: out.append(Float.toString(halfToFloat(b.getShort(i * 2)))); break;
                    case INT64: out.append(b.getLong(i * 8)); break;
                    case INT32: out.append(b.getInt(i * 4)); break;
                    default: out.append(data[i] & 0xff);
                }
            }
            return new Json.Raw(out.append(']').toString());
        }

        /** The first sample along the batch axis, shape [1, ...]. */
        Tensor firstSample() {
            long[] one = shape.clone();
            one[0] = 1;
            int bytes = (int) (data.length / shape[0]);
            Tensor t = new Tensor(name, dtype, one, Arrays.copyOf(data, bytes));
            t.hasBatch = true;
            return t;
        }

        /** The raw little-endian bytes (encoded from the values for a tensor that came as JSON numbers). */
        byte[] bytes() {
            if (data != null) {
                return data;
            }
            ByteBuffer b = ByteBuffer.allocate(values.length * dtype.size).order(ByteOrder.LITTLE_ENDIAN);
            for (double v : values) {
                switch (dtype) {
                    case FLOAT32: b.putFloat((float) v); break;
                    case FLOAT16: b.putShort(floatToHalf((float) v)); break;
                    case INT64: b.putLong((long) v); break;
                    case INT32: b.putInt((int) v); break;
                    default: b.put((byte) v);
                }
            }
            return b.array();
        }
    }

    static float halfToFloat(short half) {
        int h = half & 0xffff;
        int sign = (h & 0x8000) << 16;
        int exponent = (h >>> 10) & 0x1f;
        int mantissa = h & 0x3ff;
        if (exponent == 0x1f) {  // Inf / NaN
            return Float.intBitsToFloat(sign | 0x7f800000 | (mantissa << 13));
        }
        if (exponent == 0) {     // zero / subnormal: mantissa * 2^-24
            float value = mantissa * 0x1p-24f;
            return sign != 0 ? -value : value;
        }
        return Float.intBitsToFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
    }

    /** float -> IEEE half, rounding to nearest even (only used to re-encode a JSON answer's FP16 values). */
    static short floatToHalf(float value) {
        int bits = Float.floatToIntBits(value);
        int sign = (bits >>> 16) & 0x8000;
        int exponent = ((bits >>> 23) & 0xff) - 127 + 15;
        int mantissa = bits & 0x7fffff;
        if (((bits >>> 23) & 0xff) == 0xff) {
            return (short) (sign | 0x7c00 | (mantissa != 0 ? 0x200 : 0));
        }
        if (exponent >= 0x1f) {
            return (short) (sign | 0x7c00);
        }
        if (exponent <= 0) {
            if (exponent < -10) {
                return (short) sign;
            }
            mantissa |= 0x800000;
            int shift = 14 - exponent;
            int half = mantissa >> shift;
            int rest = mantissa & ((1 << shift) - 1);
            int halfway = 1 << (shift - 1);
            if (rest > halfway || (rest == halfway && (half & 1) == 1)) {
                half++;
            }
            return (short) (sign | half);
        }
        int half = sign | (exponent << 10) | (mantissa >> 13);
        int rest = mantissa & 0x1fff;
        if (rest > 0x1000 || (rest == 0x1000 && (half & 1) == 1)) {
            half++;  // may carry into the exponent, which is the right rounding
        }
        return (short) half;
    }

    // ============================================================================================ requests

    static final class Request {
        final byte[] body;
        final Integer headerLength;  // Inference-Header-Content-Length, for a binary request

        Request(byte[] body, Integer headerLength) {
            this.body = body;
            this.headerLength = headerLength;
        }
    }

    /** {"inputs":[{"name","shape","datatype","data":[...]}]} */
    static byte[] jsonRequest(List<Tensor> inputs) {
        List<Object> items = new ArrayList<>();
        for (Tensor t : inputs) {
            items.add(object("name", t.name, "shape", shapeList(t.shape), "datatype", t.dtype.datatype,
                    "data", t.jsonData()));
        }
        return Json.write(object("inputs", items), false).getBytes(StandardCharsets.UTF_8);
    }

    /** A JSON header asking for every output as binary, followed by the raw input bytes in input order. */
    static Request binaryRequest(List<Tensor> inputs, List<String> outputNames) {
        List<Object> items = new ArrayList<>();
        int dataBytes = 0;
        for (Tensor t : inputs) {
            items.add(object("name", t.name, "shape", shapeList(t.shape), "datatype", t.dtype.datatype,
                    "parameters", object("binary_data_size", (long) t.data.length)));
            dataBytes += t.data.length;
        }
        List<Object> outputs = new ArrayList<>();
        for (String name : outputNames) {
            outputs.add(object("name", name, "parameters", object("binary_data", true)));
        }
        byte[] header = Json.write(object("inputs", items, "outputs", outputs), false).getBytes(StandardCharsets.UTF_8);
        ByteBuffer body = ByteBuffer.allocate(header.length + dataBytes).put(header);
        for (Tensor t : inputs) {
            body.put(t.data);
        }
        return new Request(body.array(), header.length);
    }

    /** 1 warm-up, then `runs` timed round trips of the same binary request; the median in ms. */
    static Map<String, Object> time(Server server, Request request, long batch, int runs) throws Fail {
        server.infer(request.body, "application/octet-stream", request.headerLength);
        double[] ms = new double[runs];
        for (int i = 0; i < runs; i++) {
            long start = System.nanoTime();
            server.infer(request.body, "application/octet-stream", request.headerLength);
            ms[i] = (System.nanoTime() - start) / 1e6;
        }
        Arrays.sort(ms);
        double median = runs % 2 == 1 ? ms[runs / 2] : (ms[runs / 2 - 1] + ms[runs / 2]) / 2;
        return object("batch", batch, "median_ms", Math.round(median * 1000) / 1000.0, "iterations", (long) runs);
    }

    // ============================================================================================ the server

    static final class Answer {
        final byte[] body;
        final HttpResponse<byte[]> response;

        Answer(HttpResponse<byte[]> response) {
            this.response = response;
            this.body = response.body();
        }
    }

    /** POST URL/v2/models/<name>/infer; any answer but 200 is a Fail with the server's error message. */
    static final class Server {
        final String url;
        final String route;  // "POST /v2/models/<name>/infer", as errors name it
        final URI uri;
        final String apiKey;
        final HttpClient http;

        Server(String url, String model, String apiKey) throws Fail {
            this.url = url;
            this.apiKey = apiKey;
            this.route = "POST /v2/models/" + model + "/infer";
            try {
                this.uri = new URI(url + "/v2/models/" + encodeSegment(model) + "/infer");
            } catch (Exception e) {
                throw new Fail(REFUSED, "URL '" + url + "' is not a valid URL: " + e.getMessage());
            }
            if (uri.getScheme() == null || !(uri.getScheme().equals("http") || uri.getScheme().equals("https"))
                    || uri.getHost() == null) {
                throw new Fail(REFUSED, "URL '" + url + "' is not an http:// or https:// URL with a host");
            }
            this.http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(TIMEOUT).build();
        }

        Answer infer(byte[] body, String contentType, Integer headerLength) throws Fail {
            HttpRequest.Builder request = HttpRequest.newBuilder(uri).timeout(TIMEOUT)
                    .header("Content-Type", contentType)
                    .POST(HttpRequest.BodyPublishers.ofByteArray(body));
            if (headerLength != null) {
                request.header("Inference-Header-Content-Length", Integer.toString(headerLength));
            }
            if (apiKey != null) {
                request.header("Authorization", "Bearer " + apiKey);
            }
            HttpResponse<byte[]> response;
            try {
                response = http.send(request.build(), HttpResponse.BodyHandlers.ofByteArray());
            } catch (HttpConnectTimeoutException e) {
                throw new Fail(FAILED, "cannot reach " + url + ": connecting timed out after " + TIMEOUT.getSeconds() + " s");
            } catch (HttpTimeoutException e) {
                throw new Fail(FAILED, route + " timed out after " + TIMEOUT.getSeconds() + " s");
            } catch (IOException e) {
                if (unreachable(e)) {
                    throw new Fail(FAILED, "cannot reach " + url + ": " + connectReason(e));
                }
                throw new Fail(FAILED, route + " failed: " + reason(e));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new Fail(FAILED, route + " was interrupted");
            }
            if (response.statusCode() != 200) {
                String text = new String(response.body(), StandardCharsets.UTF_8);
                String message = null;
                try {
                    Object parsed = Json.parse(text);
                    if (parsed instanceof Map && ((Map<?, ?>) parsed).get("error") instanceof String) {
                        message = (String) ((Map<?, ?>) parsed).get("error");
                    }
                } catch (Json.Error notJson) {
                    // shown raw below
                }
                if (message == null) {
                    message = text.length() > 200 ? text.substring(0, 200) : text;
                }
                if (message.isBlank()) {
                    message = "(empty body)";
                }
                String line = "HTTP " + response.statusCode() + " from " + route + ": " + message;
                if (response.statusCode() == 503) {
                    String retry = response.headers().firstValue("Retry-After").orElse(null);
                    if (retry != null) {
                        line += " (Retry-After: " + retry + ")";
                    }
                }
                throw new Fail(FAILED, line);
            }
            return new Answer(response);
        }

        /**
         * Why connecting failed. Java's HttpClient reports a refused or unresolvable address as a ConnectException
         * without a message, so ask the operating system once more with a plain socket for its own words
         * ("Connection refused", "No route to host", an unknown host name).
         */
        private String connectReason(IOException e) {
            int port = uri.getPort() != -1 ? uri.getPort() : uri.getScheme().equals("https") ? 443 : 80;
            try (java.net.Socket socket = new java.net.Socket()) {
                socket.connect(new java.net.InetSocketAddress(uri.getHost(), port), 5000);
            } catch (java.net.UnknownHostException unknown) {
                return "unknown host '" + uri.getHost() + "'";
            } catch (IOException probe) {
                return reason(probe);
            }
            return reason(e);  // it answers now: keep what HttpClient said
        }

        private static boolean unreachable(Throwable e) {
            for (Throwable t = e; t != null; t = t.getCause()) {
                if (t instanceof ConnectException || t instanceof UnresolvedAddressException
                        || t instanceof java.net.UnknownHostException || t instanceof java.net.NoRouteToHostException) {
                    return true;
                }
            }
            return false;
        }
    }

    /** A path segment, percent-encoded as UTF-8 except for RFC 3986's unreserved characters. */
    static String encodeSegment(String text) {
        StringBuilder out = new StringBuilder();
        for (byte b : text.getBytes(StandardCharsets.UTF_8)) {
            char c = (char) (b & 0xff);
            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || "-._~".indexOf(c) >= 0) {
                out.append(c);
            } else {
                out.append(String.format("%%%02X", b & 0xff));
            }
        }
        return out.toString();
    }

    // ============================================================================================ answers

    /** A JSON answer's outputs (each with "data"), by name. */
    static Map<String, Tensor> readJsonAnswer(byte[] body, String mode) throws Fail {
        Map<String, Object> document = parseAnswer(body, mode);
        Map<String, Tensor> outputs = new LinkedHashMap<>();
        for (Map<String, Object> item : outputList(document, mode)) {
            Tensor t = outputHeader(item, mode);
            outputs.put(t.name, jsonTensor(item, t, mode));
        }
        return outputs;
    }

    static final class BinaryAnswer {
        final String modelVersion;
        final Map<String, Tensor> outputs;

        BinaryAnswer(String modelVersion, Map<String, Tensor> outputs) {
            this.modelVersion = modelVersion;
            this.outputs = outputs;
        }
    }

    /** A binary answer: H bytes of JSON, then each output's binary_data_size bytes in the order it lists them. */
    static BinaryAnswer readBinaryAnswer(Answer answer, String mode) throws Fail {
        byte[] body = answer.body;
        String declared = answer.response.headers().firstValue("Inference-Header-Content-Length").orElse(null);
        int headerLength = body.length;  // no header: the whole answer is JSON
        if (declared != null) {
            try {
                headerLength = Integer.parseInt(declared.trim());
            } catch (NumberFormatException e) {
                headerLength = -1;
            }
            if (headerLength < 0 || headerLength > body.length) {
                throw new Fail(FAILED, mode + ": the answer's Inference-Header-Content-Length '" + declared
                        + "' does not fit its " + body.length + " bytes");
            }
        }
        Map<String, Object> document = parseAnswer(Arrays.copyOf(body, headerLength), mode);
        int offset = headerLength;
        Map<String, Tensor> outputs = new LinkedHashMap<>();
        for (Map<String, Object> item : outputList(document, mode)) {
            Tensor header = outputHeader(item, mode);
            Object parameters = item.get("parameters");
            Object size = parameters instanceof Map ? ((Map<?, ?>) parameters).get("binary_data_size") : null;
            if (size == null) {
                outputs.put(header.name, jsonTensor(item, header, mode));
                continue;
            }
            long need = header.dtype.size;
            for (long d : header.shape) {
                need *= d;
            }
            if (!(size instanceof Long) || (Long) size != need) {
                throw new Fail(FAILED, mode + ": output '" + header.name + "' has binary_data_size " + size
                        + ", its shape " + format(header.shape) + " " + header.dtype.datatype + " needs " + need);
            }
            if (offset + need > body.length) {
                throw new Fail(FAILED, mode + ": the answer is truncated: output '" + header.name + "' needs " + need
                        + " bytes, " + (body.length - offset) + " are left");
            }
            byte[] data = Arrays.copyOfRange(body, offset, offset + (int) need);
            offset += (int) need;
            outputs.put(header.name, new Tensor(header.name, header.dtype, header.shape, data));
        }
        Object version = document.get("model_version");
        return new BinaryAnswer(version == null ? "" : String.valueOf(version), outputs);
    }

    static Map<String, Object> parseAnswer(byte[] body, String mode) throws Fail {
        try {
            return asObject(Json.parse(new String(body, StandardCharsets.UTF_8)), mode + " answer");
        } catch (Json.Error e) {
            throw new Fail(FAILED, mode + ": the server's answer is not valid JSON: " + e.getMessage());
        } catch (Fail e) {
            throw new Fail(FAILED, e.getMessage());
        }
    }

    static List<Map<String, Object>> outputList(Map<String, Object> document, String mode) throws Fail {
        Object outputs = document.get("outputs");
        if (!(outputs instanceof List)) {
            throw new Fail(FAILED, mode + ": the server's answer has no 'outputs' list");
        }
        List<Map<String, Object>> items = new ArrayList<>();
        for (Object item : (List<?>) outputs) {
            if (!(item instanceof Map)) {
                throw new Fail(FAILED, mode + ": the server's answer has an output that is not a JSON object");
            }
            @SuppressWarnings("unchecked")
            Map<String, Object> map = (Map<String, Object>) item;
            items.add(map);
        }
        return items;
    }

    /** name, datatype and shape of an answer's output (no data yet). */
    static Tensor outputHeader(Map<String, Object> item, String mode) throws Fail {
        Object name = item.get("name");
        if (!(name instanceof String)) {
            throw new Fail(FAILED, mode + ": the server's answer has an output without a name");
        }
        DType dtype = item.get("datatype") instanceof String ? DType.ofDatatype((String) item.get("datatype")) : null;
        if (dtype == null) {
            throw new Fail(FAILED, mode + ": output '" + name + "' has datatype " + item.get("datatype")
                    + ", which this client does not read");
        }
        Object dims = item.get("shape");
        if (!(dims instanceof List)) {
            throw new Fail(FAILED, mode + ": output '" + name + "' has no shape");
        }
        long[] shape = new long[((List<?>) dims).size()];
        for (int i = 0; i < shape.length; i++) {
            Object d = ((List<?>) dims).get(i);
            if (!(d instanceof Long) || (Long) d < 0) {
                throw new Fail(FAILED, mode + ": output '" + name + "' has shape " + dims + "; it needs sizes >= 0");
            }
            shape[i] = (Long) d;
        }
        return new Tensor((String) name, dtype, shape, null, null);
    }

    /** An output given as JSON "data" (flat, or nested row-major). */
    static Tensor jsonTensor(Map<String, Object> item, Tensor header, String mode) throws Fail {
        Object data = item.get("data");
        if (!(data instanceof List)) {
            throw new Fail(FAILED, mode + ": output '" + header.name + "' has no 'data' array");
        }
        List<Double> flat = new ArrayList<>();
        flatten((List<?>) data, flat, header.name, mode);
        double[] values = new double[flat.size()];
        for (int i = 0; i < values.length; i++) {
            values[i] = flat.get(i);
        }
        return new Tensor(header.name, header.dtype, header.shape, null, values);
    }

    private static void flatten(List<?> list, List<Double> into, String name, String mode) throws Fail {
        for (Object v : list) {
            if (v instanceof List) {
                flatten((List<?>) v, into, name, mode);
            } else if (v instanceof Number) {
                into.add(((Number) v).doubleValue());
            } else {
                throw new Fail(FAILED, mode + ": output '" + name + "' holds " + v + ", not a number");
            }
        }
    }

    /** Every golden output must be in the answer, with its shape, within atol + rtol * |want| elementwise. */
    static void compare(String mode, Map<String, Tensor> got, List<Tensor> golden, double atol, double rtol)
            throws Fail {
        for (Tensor want : golden) {
            Tensor have = got.get(want.name);
            if (have == null) {
                throw new Fail(FAILED, mode + ": the server returned no output '" + want.name + "'");
            }
            if (!Arrays.equals(have.shape, want.shape)) {
                throw new Fail(FAILED, mode + ": output '" + want.name + "' has shape " + format(have.shape)
                        + ", golden " + format(want.shape));
            }
            if (have.count() != want.count()) {
                throw new Fail(FAILED, mode + ": output '" + want.name + "' holds " + have.count()
                        + " values, its shape " + format(have.shape) + " needs " + want.count());
            }
            double worst = 0;
            boolean differs = false;
            for (int i = 0; i < want.count(); i++) {
                double a = have.value(i);
                double w = want.value(i);
                if (a == w || (Double.isNaN(a) && Double.isNaN(w))) {
                    continue;  // equal, including equal infinities and NaN where golden has NaN
                }
                double diff = Math.abs(a - w);
                if (Double.isNaN(diff) || diff > atol + rtol * Math.abs(w)) {
                    differs = true;
                }
                worst = Double.isNaN(diff) || Double.isNaN(worst) ? Double.NaN : Math.max(worst, diff);
            }
            if (differs) {
                throw new Fail(FAILED, mode + ": output '" + want.name + "' differs from golden by up to "
                        + brief(worst) + " (atol " + plain(atol) + ", rtol " + plain(rtol) + ")");
            }
        }
    }

    // ============================================================================================ small helpers

    /** A map keeping its keys in order: object("a", 1, "b", 2). */
    static Map<String, Object> object(Object... keysAndValues) {
        Map<String, Object> map = new LinkedHashMap<>();
        for (int i = 0; i < keysAndValues.length; i += 2) {
            map.put((String) keysAndValues[i], keysAndValues[i + 1]);
        }
        return map;
    }

    static List<Object> shapeList(long[] shape) {
        List<Object> dims = new ArrayList<>();
        for (long d : shape) {
            dims.add(d);
        }
        return dims;
    }

    static Object field(Map<String, Object> map, String key, String where) throws Fail {
        Object value = map.get(key);
        if (value == null) {
            throw new Fail(REFUSED, where + ": missing field '" + key + "'");
        }
        return value;
    }

    static String text(Map<String, Object> map, String key, String where) throws Fail {
        Object value = field(map, key, where);
        if (!(value instanceof String)) {
            throw new Fail(REFUSED, where + ": field '" + key + "' must be a string");
        }
        return (String) value;
    }

    static List<Object> list(Map<String, Object> map, String key, String where) throws Fail {
        Object value = field(map, key, where);
        if (!(value instanceof List)) {
            throw new Fail(REFUSED, where + ": field '" + key + "' must be a list");
        }
        @SuppressWarnings("unchecked")
        List<Object> list = (List<Object>) value;
        return list;
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> asObject(Object value, String where) throws Fail {
        if (!(value instanceof Map)) {
            throw new Fail(REFUSED, where + " must be a JSON object");
        }
        return (Map<String, Object>) value;
    }

    static String format(long[] shape) {
        StringJoiner joined = new StringJoiner(", ", "[", "]");
        for (long d : shape) {
            joined.add(Long.toString(d));
        }
        return joined.toString();
    }

    /** A manifest shape as errors print it: [batch, 1, 8, 8]. */
    static String formatDims(List<Object> dims) {
        StringJoiner joined = new StringJoiner(", ", "[", "]");
        for (Object d : dims) {
            joined.add(String.valueOf(d));
        }
        return joined.toString();
    }

    /** 0.0001 -> "0.0001", 1e-3 -> "0.001" (no "1.0E-4"). */
    static String plain(double value) {
        if (Double.isNaN(value) || Double.isInfinite(value)) {
            return Double.toString(value);
        }
        return BigDecimal.valueOf(value).stripTrailingZeros().toPlainString();
    }

    /** A difference to 3 significant digits: 0.52, 0.000123, 1.5e+03. */
    static String brief(double value) {
        if (Double.isNaN(value)) {
            return "NaN";
        }
        if (Double.isInfinite(value)) {
            return "Infinity";
        }
        if (value != 0 && (Math.abs(value) < 1e-4 || Math.abs(value) >= 1e6)) {
            return String.format("%.2e", value);
        }
        return new BigDecimal(value).round(new MathContext(3)).stripTrailingZeros().toPlainString();
    }

    static String sha256(byte[] bytes) {
        try {
            StringBuilder hex = new StringBuilder();
            for (byte b : MessageDigest.getInstance("SHA-256").digest(bytes)) {
                hex.append(String.format("%02x", b & 0xff));
            }
            return hex.toString();
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException("this JVM has no SHA-256");  // every Java SE platform has it
        }
    }

    static void write(Path path, byte[] bytes) throws Fail {
        try {
            Files.write(path, bytes);
        } catch (IOException e) {
            throw new Fail(FAILED, "cannot write " + path + ": " + reason(e));
        }
    }

    /** The first message in an exception's cause chain (Java's HttpClient often leaves the outer one empty). */
    static String reason(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t.getMessage() != null && !t.getMessage().isEmpty()) {
                return t.getMessage();
            }
        }
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t.getCause() == null) {
                return t.getClass().getSimpleName();
            }
        }
        return e.getClass().getSimpleName();
    }

    static String oneLine(String text) {
        return text.replace("\r\n", " ").replace('\n', ' ').replace('\r', ' ');
    }

    // ============================================================================================ JSON

    /**
     * A small JSON reader and writer. Reading gives LinkedHashMap (objects, key order kept), ArrayList, String,
     * Long (integers that fit), Double (every other number), Boolean and null. It also accepts the non-standard
     * NaN, Infinity and -Infinity that Python's json module writes for non-finite floats. Writing escapes every
     * control and non-ASCII character as \\uXXXX, so the output is plain ASCII.
     */
    static final class Json {
        static final int MAX_DEPTH = 512;

        static final class Error extends Exception {
            private static final long serialVersionUID = 1L;

            Error(String message) {
                super(message);
            }
        }

        /** Text that is already valid JSON, written as it is (e.g. a large pre-rendered number array). */
        static final class Raw {
            final String text;

            Raw(String text) {
                this.text = text;
            }
        }

        private final String s;
        private int pos;

        private Json(String s) {
            this.s = s;
        }

        static Object parse(String text) throws Error {
            Json reader = new Json(text);
            reader.skipSpace();
            Object value = reader.value(0);
            reader.skipSpace();
            if (reader.pos != text.length()) {
                throw reader.error("unexpected text after the JSON value");
            }
            return value;
        }

        private Error error(String what) {
            return new Error(what + " at character " + pos);
        }

        private void skipSpace() {
            while (pos < s.length()) {
                char c = s.charAt(pos);
                if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                    break;
                }
                pos++;
            }
        }

        private Object value(int depth) throws Error {
            if (depth > MAX_DEPTH) {
                throw error("JSON nested deeper than " + MAX_DEPTH);
            }
            if (pos >= s.length()) {
                throw error("unexpected end of JSON");
            }
            char c = s.charAt(pos);
            switch (c) {
                case '{': return object(depth);
                case '[': return array(depth);
                case '"': return string();
                case 't': return literal("true", Boolean.TRUE);
                case 'f': return literal("false", Boolean.FALSE);
                case 'n': return literal("null", null);
                case 'N': return literal("NaN", Double.NaN);
                case 'I': return literal("Infinity", Double.POSITIVE_INFINITY);
                default:
                    if (c == '-' && s.startsWith("-Infinity", pos)) {
                        return literal("-Infinity", Double.NEGATIVE_INFINITY);
                    }
                    if (c == '-' || (c >= '0' && c <= '9')) {
                        return number();
                    }
                    throw error("unexpected character '" + c + "'");
            }
        }

        private Object literal(String word, Object value) throws Error {
            if (!s.startsWith(word, pos)) {
                throw error("unexpected character '" + s.charAt(pos) + "'");
            }
            pos += word.length();
            return value;
        }

        private Map<String, Object> object(int depth) throws Error {
            Map<String, Object> map = new LinkedHashMap<>();
            pos++;  // '{'
            skipSpace();
            if (pos < s.length() && s.charAt(pos) == '}') {
                pos++;
                return map;
            }
            while (true) {
                skipSpace();
                if (pos >= s.length() || s.charAt(pos) != '"') {
                    throw error("expected a string key");
                }
                String key = string();
                skipSpace();
                expect(':');
                skipSpace();
                map.put(key, value(depth + 1));
                skipSpace();
                if (pos < s.length() && s.charAt(pos) == ',') {
                    pos++;
                } else {
                    expect('}');
                    return map;
                }
            }
        }

        private List<Object> array(int depth) throws Error {
            List<Object> list = new ArrayList<>();
            pos++;  // '['
            skipSpace();
            if (pos < s.length() && s.charAt(pos) == ']') {
                pos++;
                return list;
            }
            while (true) {
                skipSpace();
                list.add(value(depth + 1));
                skipSpace();
                if (pos < s.length() && s.charAt(pos) == ',') {
                    pos++;
                } else {
                    expect(']');
                    return list;
                }
            }
        }

        private void expect(char c) throws Error {
            if (pos >= s.length() || s.charAt(pos) != c) {
                throw error("expected '" + c + "'");
            }
            pos++;
        }

        private String string() throws Error {
            pos++;  // opening quote
            StringBuilder out = new StringBuilder();
            while (true) {
                if (pos >= s.length()) {
                    throw error("unterminated string");
                }
                char c = s.charAt(pos++);
                if (c == '"') {
                    return out.toString();
                } else if (c < 0x20) {
                    throw error("control character in a string");
                } else if (c != '\\') {
                    out.append(c);
                    continue;
                }
                if (pos >= s.length()) {
                    throw error("unterminated string");
                }
                char e = s.charAt(pos++);
                switch (e) {
                    case '"': out.append('"'); break;
                    case '\\': out.append('\\'); break;
                    case '/': out.append('/'); break;
                    case 'b': out.append('\b'); break;
                    case 'f': out.append('\f'); break;
                    case 'n': out.append('\n'); break;
                    case 'r': out.append('\r'); break;
                    case 't': out.append('\t'); break;
                    case 'u':  // a surrogate pair arrives as two escapes, which join up in the builder
                        if (pos + 4 > s.length()) {
                            throw error("short \\u escape");
                        }
                        int code = 0;
                        for (int i = 0; i < 4; i++) {
                            int digit = Character.digit(s.charAt(pos + i), 16);
                            if (digit < 0) {
                                throw error("bad \\u escape");
                            }
                            code = code * 16 + digit;
                        }
                        pos += 4;
                        out.append((char) code);
                        break;
                    default:
                        throw error("bad escape '\\" + e + "'");
                }
            }
        }

        /** -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? as Long when integral and in range, else Double. */
        private Object number() throws Error {
            int start = pos;
            if (s.charAt(pos) == '-') {
                pos++;
            }
            if (pos < s.length() && s.charAt(pos) == '0') {
                pos++;
            } else if (digits() == 0) {
                throw error("bad number");
            }
            boolean integral = true;
            if (pos < s.length() && s.charAt(pos) == '.') {
                pos++;
                integral = false;
                if (digits() == 0) {
                    throw error("bad number: no digits after '.'");
                }
            }
            if (pos < s.length() && (s.charAt(pos) == 'e' || s.charAt(pos) == 'E')) {
                pos++;
                integral = false;
                if (pos < s.length() && (s.charAt(pos) == '+' || s.charAt(pos) == '-')) {
                    pos++;
                }
                if (digits() == 0) {
                    throw error("bad number: no digits in the exponent");
                }
            }
            String text = s.substring(start, pos);
            if (integral) {
                try {
                    return Long.parseLong(text);
                } catch (NumberFormatException tooBig) {
                    // falls through to a double
                }
            }
            return Double.parseDouble(text);
        }

        private int digits() {
            int start = pos;
            while (pos < s.length() && s.charAt(pos) >= '0' && s.charAt(pos) <= '9') {
                pos++;
            }
            return pos - start;
        }

        /** JSON text for maps, lists, strings, numbers, booleans, null and Raw; pretty = 2-space indent. */
        static String write(Object value, boolean pretty) {
            StringBuilder out = new StringBuilder();
            write(value, out, pretty ? 0 : -1);
            return out.toString();
        }

        private static void write(Object value, StringBuilder out, int indent) {
            if (value == null) {
                out.append("null");
            } else if (value instanceof Raw) {
                out.append(((Raw) value).text);
            } else if (value instanceof String) {
                quote((String) value, out);
            } else if (value instanceof Boolean || value instanceof Long || value instanceof Integer) {
                out.append(value);
            } else if (value instanceof Number) {
                double d = ((Number) value).doubleValue();
                out.append(Double.isNaN(d) || Double.isInfinite(d) ? "null" : Double.toString(d));
            } else if (value instanceof Map) {
                Map<?, ?> map = (Map<?, ?>) value;
                out.append('{');
                int i = 0;
                for (Map.Entry<?, ?> e : map.entrySet()) {
                    out.append(i++ > 0 ? "," : "");
                    newline(out, indent, 1);
                    quote(String.valueOf(e.getKey()), out);
                    out.append(indent >= 0 ? ": " : ":");
                    write(e.getValue(), out, indent >= 0 ? indent + 1 : -1);
                }
                if (!map.isEmpty()) {
                    newline(out, indent, 0);
                }
                out.append('}');
            } else if (value instanceof List) {
                List<?> list = (List<?>) value;
                boolean flat = true;  // short lists of scalars (shapes) stay on one line
                for (Object item : list) {
                    flat &= !(item instanceof Map || item instanceof List);
                }
                out.append('[');
                for (int i = 0; i < list.size(); i++) {
                    out.append(i > 0 ? (flat && indent >= 0 ? ", " : ",") : "");
                    if (!flat) {
                        newline(out, indent, 1);
                    }
                    write(list.get(i), out, indent >= 0 ? indent + 1 : -1);
                }
                if (!flat && !list.isEmpty()) {
                    newline(out, indent, 0);
                }
                out.append(']');
            } else {
                quote(value.toString(), out);
            }
        }

        private static void newline(StringBuilder out, int indent, int extra) {
            if (indent >= 0) {
                out.append('\n');
                for (int i = 0; i < (indent + extra) * 2; i++) {
                    out.append(' ');
                }
            }
        }

        private static void quote(String text, StringBuilder out) {
            out.append('"');
            for (int i = 0; i < text.length(); i++) {
                char c = text.charAt(i);
                switch (c) {
                    case '"': out.append("\\\""); break;
                    case '\\': out.append("\\\\"); break;
                    case '\n': out.append("\\n"); break;
                    case '\r': out.append("\\r"); break;
                    case '\t': out.append("\\t"); break;
                    case '\b': out.append("\\b"); break;
                    case '\f': out.append("\\f"); break;
                    default:
                        if (c < 0x20 || c > 0x7e) {
                            out.append(String.format("\\u%04x", (int) c));
                        } else {
                            out.append(c);
                        }
                }
            }
            out.append('"');
        }
    }
}
