// torchport Java runner: run a bundle's golden inputs through ONNX Runtime (CPU) and write the outputs raw.
// Usage: java -jar target/torchport-runner.jar BUNDLE OUT_DIR [--artifact PATH]
// Reads only BUNDLE/manifest.json and the files it names; refuses absolute or '..' paths, bad SHA-256s and golden
// inputs that do not match the model's declared inputs (one "error: " line, exit 2). On success writes one raw
// little-endian <output>.bin per model output plus result.json into OUT_DIR and prints result.json's path.
package dev.torchport.runner;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtLoggingLevel;
import ai.onnxruntime.OrtSession;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.lang.reflect.Field;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

public final class Runner {
    private static final String USAGE = "usage: java -jar torchport-runner.jar BUNDLE OUT_DIR [--artifact PATH]";
    /** Latency plan: (batch, iterations); a batch of 0 stands for the whole golden batch. */
    private static final long[][] PLAN = {{1, 20}, {0, 5}};

    private Runner() {}

    public static void main(String[] args) {
        int code;
        try {
            code = run(args);
        } catch (Refusal e) {
            System.err.println("error: " + e.getMessage());
            code = 2;
        } catch (Throwable e) {  // ORT errors, I/O, a native library that will not load: one line, never a trace
            System.err.println("error: " + oneLine(e));
            code = 1;
        }
        System.out.flush();
        // exit explicitly: nothing may keep the JVM alive once the result is written
        System.exit(code);
    }

    private static int run(String[] argv) throws Exception {
        List<String> args = new ArrayList<>(Arrays.asList(argv));
        String wanted = null;
        int at = args.indexOf("--artifact");
        if (at >= 0 && at + 1 < args.size()) {
            wanted = args.get(at + 1);
            args.subList(at, at + 2).clear();
        }
        if (args.size() != 2 || args.contains("--artifact")) {
            System.err.println(USAGE);
            return 2;
        }
        Bundle bundle = Bundle.open(Path.of(args.get(0)));
        Path outDir = Path.of(args.get(1));

        // every refusal happens here, before ORT is even loaded: artifact checksum, golden checksums, input checks
        JsonNode artifact = bundle.artifact(wanted);
        byte[] model = bundle.checkedFile(artifact);
        List<Bundle.Input> inputs = bundle.goldenInputs();

        OrtEnvironment env = OrtEnvironment.getEnvironment(OrtLoggingLevel.ORT_LOGGING_LEVEL_WARNING, "torchport");
        try (OrtSession.SessionOptions options = new OrtSession.SessionOptions()) {
            options.setIntraOpNumThreads(1);
            options.setInterOpNumThreads(1);
            options.setSessionLogLevel(OrtLoggingLevel.ORT_LOGGING_LEVEL_WARNING);
            // the session gets the very bytes whose checksum was verified, not a second read of the file
            try (OrtSession session = env.createSession(model, options)) {
                for (String name : session.getOutputNames()) {
                    checkOutputName(name);
                }
                ObjectNode result = new ObjectMapper().createObjectNode();
                result.put("runtime", "onnxruntime-java");
                result.put("version", env.getVersion());
                result.put("device", "cpu");
                result.put("artifact", artifact.get("path").asText());
                result.put("precision", Bundle.precision(artifact));

                long total = inputs.isEmpty() ? 1 : inputs.get(0).shape()[0];
                result.set("outputs", writeOutputs(env, session, inputs, total, outDir));
                result.set("latency", latency(env, session, inputs, total, result.arrayNode()));

                Path resultFile = outDir.resolve("result.json");
                Files.writeString(resultFile, result.toPrettyString() + "\n");
                System.out.println(resultFile);
            }
        } finally {
            env.close();
            removeOrtTempDir();
        }
        return 0;
    }

    /** Refuses an output name that is not a plain file name: it becomes OUT_DIR/<name>.bin. */
    static String checkOutputName(String name) throws Refusal {
        if (name.isEmpty() || name.equals(".") || name.equals("..") || name.indexOf('/') >= 0
                || name.indexOf('\\') >= 0 || name.indexOf('\0') >= 0) {
            throw new Refusal("output name '" + name + "' is not a plain file name; refusing it");
        }
        return name;
    }

    /**
     * ORT's Java loader extracts its native libraries into a fresh /tmp/onnxruntime-java* folder and marks the
     * folder for delete-on-exit before the files inside it; the JVM deletes in reverse order, finds the folder
     * still full, and so leaves an empty folder behind on every run. Remove it here instead: the libraries are
     * already mapped, so deleting the files is safe on Linux and macOS. Best effort: any failure is ignored.
     */
    private static void removeOrtTempDir() {
        try {
            Field field = Class.forName("ai.onnxruntime.OnnxRuntime").getDeclaredField("tempDirectory");
            field.setAccessible(true);
            Path dir = (Path) field.get(null);
            if (dir != null && dir.getFileName().toString().startsWith("onnxruntime-java")) {
                try (Stream<Path> files = Files.list(dir)) {
                    for (Path file : (Iterable<Path>) files::iterator) {
                        Files.deleteIfExists(file);
                    }
                }
                Files.deleteIfExists(dir);
            }
        } catch (ReflectiveOperationException | IOException | RuntimeException e) {
            // leaving a temp folder behind is no reason to fail a run that succeeded
        }
    }

    /** Runs the full golden batch once and writes every output, in the session's order, as OUT_DIR/<name>.bin. */
    private static ArrayNode writeOutputs(OrtEnvironment env, OrtSession session, List<Bundle.Input> inputs,
            long total, Path outDir) throws Exception {
        ArrayNode described = new ObjectMapper().createArrayNode();
        Map<String, OnnxTensor> feed = feed(env, inputs, total);
        try (OrtSession.Result outputs = session.run(feed)) {
            Files.createDirectories(outDir);
            for (Map.Entry<String, OnnxValue> output : outputs) {
                if (!(output.getValue() instanceof OnnxTensor)) {
                    throw new IllegalStateException("output '" + output.getKey() + "' is not a tensor");
                }
                OnnxTensor tensor = (OnnxTensor) output.getValue();
                DType dtype = DType.of(tensor.getInfo().type);
                String file = output.getKey() + ".bin";
                Files.write(outDir.resolve(file), dtype.littleEndianBytes(tensor));
                ObjectNode entry = described.addObject();
                entry.put("name", output.getKey());
                entry.put("path", file);
                entry.put("dtype", dtype.name);
                ArrayNode shape = entry.putArray("shape");
                for (long d : tensor.getInfo().getShape()) {
                    shape.add(d);
                }
            }
        } finally {
            close(feed);
        }
        return described;
    }

    /**
     * Median wall time per plan entry: the first `batch` rows of every input, warm-up runs, then timed runs. The JVM
     * gets as many warm-up runs as timed ones (the siblings get one): until the JIT has compiled the binding's call
     * path, a run measures the interpreter, not ONNX Runtime.
     */
    private static ArrayNode latency(OrtEnvironment env, OrtSession session, List<Bundle.Input> inputs, long total,
            ArrayNode into) throws Exception {
        for (long[] step : PLAN) {
            long batch = step[0] == 0 ? total : step[0];
            if (step[0] == 0 && total == 1) {
                continue;  // the whole batch is the batch-1 run already measured
            }
            int iterations = (int) step[1];
            Map<String, OnnxTensor> feed = feed(env, inputs, batch);
            try {
                for (int i = 0; i < iterations; i++) {
                    session.run(feed).close();
                }
                double[] times = new double[iterations];
                for (int i = 0; i < iterations; i++) {
                    long start = System.nanoTime();
                    OrtSession.Result outputs = session.run(feed);
                    times[i] = (System.nanoTime() - start) / 1e6;
                    outputs.close();  // freeing the outputs is not part of the timed call
                }
                ObjectNode entry = into.addObject();
                entry.put("batch", batch);
                entry.put("median_ms", median(times));
                entry.put("iterations", iterations);
            } finally {
                close(feed);
            }
        }
        return into;
    }

    /** Tensors over the first `batch` rows of every golden input, backed by direct little-endian buffers. */
    private static Map<String, OnnxTensor> feed(OrtEnvironment env, List<Bundle.Input> inputs, long batch)
            throws OrtException {
        Map<String, OnnxTensor> feed = new LinkedHashMap<>();
        try {
            for (Bundle.Input input : inputs) {
                long[] shape = input.shape().clone();
                int bytes = input.data().length;
                if (shape.length > 0 && shape[0] > 0) {
                    bytes = Math.toIntExact(input.data().length / shape[0] * batch);
                    shape[0] = batch;
                }
                ByteBuffer data = ByteBuffer.allocateDirect(bytes).order(ByteOrder.LITTLE_ENDIAN);
                data.put(input.data(), 0, bytes).flip();
                feed.put(input.name(), input.dtype().tensor(env, data, shape));
            }
        } catch (OrtException | RuntimeException e) {
            close(feed);
            throw e;
        }
        return feed;
    }

    private static void close(Map<String, OnnxTensor> feed) {
        feed.values().forEach(OnnxTensor::close);
    }

    /** The median; the mean of the two middle values for an even count. */
    static double median(double[] values) {
        double[] sorted = values.clone();
        Arrays.sort(sorted);
        int mid = sorted.length / 2;
        return sorted.length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }

    /** An exception as one line: its message (or its cause's, or its type), newlines folded into spaces. */
    private static String oneLine(Throwable e) {
        Throwable t = e;
        while ((t.getMessage() == null || t.getMessage().isBlank()) && t.getCause() != null) {
            t = t.getCause();
        }
        String message = t.getMessage() == null || t.getMessage().isBlank() ? t.getClass().getName() : t.getMessage();
        return message.strip().replaceAll("\\s*\\R\\s*", " ");
    }
}
