// torchport Open Inference Protocol v2 client (C#, Mono / .NET Framework 4.5+).
//
// Calls a running `torchport serve` with a bundle's golden inputs, once as a JSON request and once with Triton's
// binary tensor extension, checks both answers against the bundle's golden outputs, measures the binary
// request's latency (batch 1 and the full golden batch) and writes OUT_DIR/result.json plus one raw
// little-endian <output>.bin per output. It reads only BUNDLE/manifest.json and the golden files it names.
//
// Build and run (from the bundle folder, Mono: apt-get install mono-complete):
//   mcs -out:clients/csharp/client.exe -r:System.Net.Http.dll -r:System.Web.Extensions.dll clients/csharp/Client.cs
//   mono clients/csharp/client.exe BUNDLE URL OUT_DIR [--api-key KEY]
//
// --api-key KEY (or $TORCHPORT_API_KEY when the flag is absent) is sent as `Authorization: Bearer KEY`.
// Exit codes: 0 success (prints result.json's path), 1 server/HTTP failure or outputs off golden,
// 2 usage error or a refused bundle (unsafe path, checksum, dtype/shape). Every error is one line on stderr.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Web.Script.Serialization;

namespace Torchport.Client
{
    /// <summary>An expected failure: its message becomes the single "error: ..." line, Code the exit status.</summary>
    sealed class Fail : Exception
    {
        public readonly int Code;
        public Fail(int code, string message) : base(message) { Code = code; }
    }

    /// <summary>A tensor read from the bundle: name, manifest dtype, shape and its raw little-endian bytes.</summary>
    sealed class Tensor
    {
        public string Name, Dtype, Path;
        public long[] Shape;
        public byte[] Bytes;
    }

    /// <summary>One output of a server answer: values as doubles plus, for binary outputs, the raw bytes.</summary>
    sealed class Output
    {
        public string Name, Datatype;
        public long[] Shape;
        public double[] Values;
        public byte[] Raw;
    }

    static class Program
    {
        const string Usage = "usage: client BUNDLE URL OUT_DIR [--api-key KEY]";
        const int TimeoutSeconds = 30;
        static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
        static readonly JavaScriptSerializer Json = new JavaScriptSerializer { MaxJsonLength = int.MaxValue };

        // manifest dtype -> (v2 datatype, bytes per element)
        static readonly Dictionary<string, string> Datatypes = new Dictionary<string, string>
        {
            { "float32", "FP32" }, { "float16", "FP16" }, { "int64", "INT64" }, { "int32", "INT32" }, { "uint8", "UINT8" },
        };
        static readonly Dictionary<string, int> ItemSize = new Dictionary<string, int>
        {
            { "FP32", 4 }, { "FP16", 2 }, { "INT64", 8 }, { "INT32", 4 }, { "UINT8", 1 },
        };

        static int Main(string[] args)
        {
            try
            {
                return Run(args);
            }
            catch (Fail fail)
            {
                Console.Error.WriteLine("error: " + OneLine(fail.Message));
                return fail.Code;
            }
            catch (Exception exc)
            {
                Console.Error.WriteLine("error: unexpected " + exc.GetType().Name + ": " + OneLine(exc.Message));
                return 1;
            }
        }

        static int Run(string[] args)
        {
            // ---- command line -------------------------------------------------------------------------------
            var positional = new List<string>();
            string apiKey = null;
            for (int i = 0; i < args.Length; i++)
            {
                if (args[i] == "--api-key")
                {
                    if (i + 1 >= args.Length) return UsageError();
                    apiKey = args[++i];
                }
                else if (args[i].StartsWith("--api-key=", StringComparison.Ordinal))
                    apiKey = args[i].Substring("--api-key=".Length);
                else
                    positional.Add(args[i]);
            }
            if (positional.Count != 3) return UsageError();
            string bundle = positional[0], url = positional[1], outDir = positional[2];
            if (url.EndsWith("/", StringComparison.Ordinal)) url = url.Substring(0, url.Length - 1);
            Uri baseUri;
            if (!Uri.TryCreate(url, UriKind.Absolute, out baseUri) || (baseUri.Scheme != "http" && baseUri.Scheme != "https"))
                throw new Fail(2, "URL '" + url + "' is not an http:// or https:// address");
            if (apiKey == null) apiKey = Environment.GetEnvironmentVariable("TORCHPORT_API_KEY");
            if (apiKey == "") apiKey = null;

            // ---- bundle -------------------------------------------------------------------------------------
            var manifest = ReadManifest(bundle);
            string model = Str(manifest, "name", "manifest");
            var inputSpecs = List(manifest, "inputs", "manifest").Select(o => Obj(o, "manifest inputs[]")).ToList();
            var outputSpecs = List(manifest, "outputs", "manifest").Select(o => Obj(o, "manifest outputs[]")).ToList();
            var golden = Obj(Get(manifest, "golden", "manifest"), "manifest golden");
            var goldenIn = List(golden, "inputs", "golden").Select(o => ReadTensor(bundle, Obj(o, "golden inputs[]"))).ToList();
            var goldenOut = List(golden, "outputs", "golden").Select(o => ReadTensor(bundle, Obj(o, "golden outputs[]"))).ToList();
            double atol = 1e-4, rtol = 1e-3;
            object verification;
            if (manifest.TryGetValue("verification", out verification) && verification is object[])
            {
                foreach (var entry in ((object[])verification).OfType<Dictionary<string, object>>())
                {
                    object artifact, judged;
                    if (entry.TryGetValue("artifact", out artifact) && "model.onnx".Equals(artifact)
                        && entry.TryGetValue("judged_by", out judged) && "parity".Equals(judged))
                    {
                        atol = Num(entry, "atol", "verification");
                        rtol = Num(entry, "rtol", "verification");
                        break;
                    }
                }
            }

            // The golden inputs must be exactly the manifest's inputs, with its dtypes and shapes, and agree on N.
            var inputs = new List<Tensor>();
            foreach (var spec in inputSpecs)
            {
                string name = Str(spec, "name", "manifest inputs[]");
                string dtype = Str(spec, "dtype", "manifest input '" + name + "'");
                var tensor = goldenIn.FirstOrDefault(t => t.Name == name);
                if (tensor == null) throw new Fail(2, "input '" + name + "': the golden inputs have no such tensor; refusing it");
                if (tensor.Dtype != dtype)
                    throw new Fail(2, "input '" + name + "': the manifest declares dtype " + dtype + ", the golden tensor is " + tensor.Dtype + "; refusing it");
                var declared = List(spec, "shape", "manifest input '" + name + "'");
                bool fits = declared.Length == tensor.Shape.Length;
                for (int d = 0; fits && d < declared.Length; d++)
                    fits = "batch".Equals(declared[d]) ? d == 0 : IsNumber(declared[d]) && Convert.ToInt64(declared[d], Inv) == tensor.Shape[d];
                if (!fits)
                    throw new Fail(2, "input '" + name + "': the manifest declares shape " + ShapeText(declared) + ", the golden tensor is " + ShapeText(tensor.Shape) + "; refusing it");
                inputs.Add(tensor);
            }
            foreach (var tensor in goldenIn)
                if (!inputs.Contains(tensor))
                    throw new Fail(2, "golden input '" + tensor.Name + "' is not one of the manifest's inputs; refusing it");
            if (inputs.Count == 0) throw new Fail(2, "the manifest declares no inputs; refusing it");
            long batch = inputs[0].Shape[0];
            if (inputs.Any(t => t.Shape[0] != batch))
                throw new Fail(2, "the golden inputs disagree on the batch size; refusing them");

            // Ask for every manifest output, then any golden output the manifest does not list.
            var outputNames = outputSpecs.Select(s => Str(s, "name", "manifest outputs[]")).ToList();
            foreach (var tensor in goldenOut)
                if (!outputNames.Contains(tensor.Name)) outputNames.Add(tensor.Name);
            foreach (var name in outputNames)
                if (name.Length == 0 || name == "." || name == ".." || name.IndexOfAny(new[] { '/', '\\', '\0' }) >= 0)
                    throw new Fail(2, "output name '" + name + "' cannot be a file name; refusing it");

            // ---- server -------------------------------------------------------------------------------------
            ServicePointManager.Expect100Continue = false;   // no 100-continue round trip before each body
            ServicePointManager.UseNagleAlgorithm = false;   // small bodies go out at once
            using (var http = new HttpClient { Timeout = TimeSpan.FromSeconds(TimeoutSeconds) })
            {
                http.DefaultRequestHeaders.ExpectContinue = false;
                if (apiKey != null) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
                var server = new Server(http, url, model);

                // Request A: JSON.
                var jsonBody = Encoding.UTF8.GetBytes(JsonRequest(inputs));
                var jsonAnswer = Parse("json", server.Post(jsonBody, null), model);
                Check("json", jsonAnswer.Item2, goldenOut, atol, rtol);
                string modelVersion = jsonAnswer.Item1;

                // Request B: binary tensor extension, full batch (its bytes become OUT_DIR/<output>.bin).
                var full = BinaryRequest(inputs, outputNames, batch);
                var binAnswer = Parse("binary", server.Post(full.Item1, full.Item2), model);
                foreach (var output in binAnswer.Item2.Values)
                    if (output.Raw == null)
                        throw new Fail(1, "binary: output '" + output.Name + "' came back as JSON data, not binary data");
                Check("binary", binAnswer.Item2, goldenOut, atol, rtol);

                // Latency: batch 1 (first sample of every input), then the full batch N.
                var latency = new List<object>();
                var one = BinaryRequest(inputs, outputNames, 1);
                latency.Add(Time(server, one, 1, 20));
                if (batch != 1) latency.Add(Time(server, full, batch, 5));

                // ---- results --------------------------------------------------------------------------------
                try
                {
                    Directory.CreateDirectory(outDir);
                    var written = new List<object>();
                    foreach (var name in outputNames)
                    {
                        var output = binAnswer.Item2[name];
                        File.WriteAllBytes(Path.Combine(outDir, name + ".bin"), output.Raw);
                        written.Add(new Dictionary<string, object>
                        {
                            { "name", name }, { "path", name + ".bin" }, { "dtype", DtypeOf(output.Datatype) }, { "shape", output.Shape },
                        });
                    }
                    var result = new Dictionary<string, object>
                    {
                        { "runtime", "v2-csharp" }, { "version", RuntimeVersion() }, { "device", "server" },
                        { "artifact", "model.onnx" }, { "precision", "fp32" }, { "server", url },
                        { "model_version", modelVersion }, { "outputs", written }, { "latency", latency },
                    };
                    string resultPath = Path.Combine(outDir, "result.json");
                    File.WriteAllText(resultPath, Json.Serialize(result) + "\n", new UTF8Encoding(false));
                    Console.WriteLine(resultPath);
                }
                catch (Exception exc) when (exc is IOException || exc is UnauthorizedAccessException)
                {
                    throw new Fail(1, "cannot write " + outDir + ": " + exc.Message);
                }
            }
            return 0;
        }

        static int UsageError()
        {
            Console.Error.WriteLine(Usage);
            return 2;
        }

        // ---- the bundle ---------------------------------------------------------------------------------------

        static Dictionary<string, object> ReadManifest(string bundle)
        {
            string path = Path.Combine(bundle, "manifest.json");
            string text;
            try { text = File.ReadAllText(path, Encoding.UTF8); }
            catch (Exception exc) { throw new Fail(2, "cannot read " + path + ": " + exc.Message); }
            object parsed;
            try { parsed = Json.DeserializeObject(text); }
            catch (Exception exc) { throw new Fail(2, path + " is not valid JSON: " + exc.Message); }
            return Obj(parsed, "manifest.json");
        }

        /// <summary>A golden file: safe relative path, SHA-256 as the manifest says, size that fits dtype and shape.</summary>
        static Tensor ReadTensor(string bundle, Dictionary<string, object> entry)
        {
            var tensor = new Tensor
            {
                Name = Str(entry, "name", "golden entry"),
                Path = Str(entry, "path", "golden entry"),
            };
            tensor.Dtype = Str(entry, "dtype", "golden '" + tensor.Name + "'");
            tensor.Shape = List(entry, "shape", "golden '" + tensor.Name + "'")
                .Select(d => IsNumber(d) ? Convert.ToInt64(d, Inv) : -1).ToArray();
            string rel = tensor.Path;
            if (rel.Length == 0 || rel.StartsWith("/", StringComparison.Ordinal) || rel.Contains("\\") || (rel.Length > 1 && rel[1] == ':')
                || System.IO.Path.IsPathRooted(rel) || rel.Split('/').Contains(".."))
                throw new Fail(2, "bundle path '" + rel + "' is absolute or contains '..'; refusing it");
            if (!Datatypes.ContainsKey(tensor.Dtype))
                throw new Fail(2, "tensor '" + tensor.Name + "': dtype '" + tensor.Dtype + "' is not supported (float32, float16, int64, int32, uint8)");
            if (tensor.Shape.Length == 0 || tensor.Shape.Any(d => d < 1))
                throw new Fail(2, "tensor '" + tensor.Name + "': shape " + ShapeText(tensor.Shape) + " is not a list of positive integers; refusing it");

            try { tensor.Bytes = File.ReadAllBytes(System.IO.Path.Combine(bundle, rel)); }
            catch (Exception exc) { throw new Fail(2, "cannot read bundle file '" + rel + "': " + exc.Message); }
            string want = (Get(entry, "sha256", "golden '" + tensor.Name + "'") as string ?? "").ToLowerInvariant();
            string got;
            using (var sha = SHA256.Create())
                got = string.Concat(sha.ComputeHash(tensor.Bytes).Select(b => b.ToString("x2")));
            if (got != want)
                throw new Fail(2, "bundle file '" + rel + "' fails its checksum: SHA-256 " + Head(got) + "... != manifest " + Head(want) + "...; refusing it");
            long need = tensor.Shape.Aggregate(1L, (a, d) => a * d) * ItemSize[Datatypes[tensor.Dtype]];
            if (tensor.Bytes.LongLength != need)
                throw new Fail(2, "bundle file '" + rel + "' holds " + tensor.Bytes.LongLength + " bytes, " + tensor.Dtype + " " + ShapeText(tensor.Shape) + " needs " + need + "; refusing it");
            return tensor;
        }

        // ---- requests -----------------------------------------------------------------------------------------

        /// <summary>Request A: {"inputs":[{"name","shape","datatype","data":[flat row-major numbers]}]}.</summary>
        static string JsonRequest(List<Tensor> inputs)
        {
            var sb = new StringBuilder("{\"inputs\":[");
            for (int i = 0; i < inputs.Count; i++)
            {
                var t = inputs[i];
                string datatype = Datatypes[t.Dtype];
                if (i > 0) sb.Append(',');
                sb.Append("{\"name\":").Append(Json.Serialize(t.Name))
                  .Append(",\"shape\":").Append(Json.Serialize(t.Shape))
                  .Append(",\"datatype\":\"").Append(datatype).Append("\",\"data\":[");
                double[] values = Decode(t.Bytes, 0, t.Bytes.Length, datatype);
                for (int k = 0; k < values.Length; k++)
                {
                    if (k > 0) sb.Append(',');
                    sb.Append(NumberText(values[k], datatype));
                }
                sb.Append("]}");
            }
            return sb.Append("]}").ToString();
        }

        /// <summary>Request B: JSON header + the first `rows` samples of every input as raw bytes.
        /// Returns (body, JSON header length).</summary>
        static Tuple<byte[], int> BinaryRequest(List<Tensor> inputs, List<string> outputNames, long rows)
        {
            var header = new Dictionary<string, object>();
            var entries = new List<object>();
            var chunks = new List<byte[]>();
            foreach (var t in inputs)
            {
                var shape = (long[])t.Shape.Clone();
                shape[0] = rows;
                int size = (int)(t.Bytes.LongLength / t.Shape[0] * rows);
                var chunk = new byte[size];
                Array.Copy(t.Bytes, chunk, size);
                chunks.Add(chunk);
                entries.Add(new Dictionary<string, object>
                {
                    { "name", t.Name }, { "shape", shape }, { "datatype", Datatypes[t.Dtype] },
                    { "parameters", new Dictionary<string, object> { { "binary_data_size", size } } },
                });
            }
            header["inputs"] = entries;
            header["outputs"] = outputNames.Select(n => (object)new Dictionary<string, object>
            {
                { "name", n }, { "parameters", new Dictionary<string, object> { { "binary_data", true } } },
            }).ToList();
            byte[] head = Encoding.UTF8.GetBytes(Json.Serialize(header));
            var body = new byte[head.Length + chunks.Sum(c => c.Length)];
            Array.Copy(head, body, head.Length);
            int offset = head.Length;
            foreach (var c in chunks) { Array.Copy(c, 0, body, offset, c.Length); offset += c.Length; }
            return Tuple.Create(body, head.Length);
        }

        /// <summary>POSTs to URL/v2/models/NAME/infer; every non-200 and every transport failure is a Fail(1).</summary>
        sealed class Server
        {
            readonly HttpClient http;
            readonly string url, route;
            readonly Uri target;

            public Server(HttpClient http, string url, string model)
            {
                this.http = http;
                this.url = url;
                route = "/v2/models/" + model + "/infer";
                target = new Uri(url + "/v2/models/" + Uri.EscapeDataString(model) + "/infer");
            }

            /// <summary>headerLength null: a JSON body; otherwise a binary-extension body. Returns (headers, body).</summary>
            public Tuple<HttpResponseMessage, byte[]> Post(byte[] body, int? headerLength)
            {
                var request = new HttpRequestMessage(HttpMethod.Post, target) { Content = new ByteArrayContent(body) };
                if (headerLength == null)
                    request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
                else
                {
                    request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
                    request.Headers.TryAddWithoutValidation("Inference-Header-Content-Length", headerLength.Value.ToString(Inv));
                }
                HttpResponseMessage response;
                byte[] answer;
                try
                {
                    response = http.SendAsync(request).GetAwaiter().GetResult();
                    answer = response.Content.ReadAsByteArrayAsync().GetAwaiter().GetResult();
                }
                catch (OperationCanceledException)
                {
                    throw new Fail(1, "no answer from POST " + route + " at " + url + " within " + TimeoutSeconds + " s");
                }
                catch (HttpRequestException exc)
                {
                    throw new Fail(1, "cannot reach " + url + ": " + Reason(exc));
                }
                catch (WebException exc)
                {
                    throw new Fail(1, "cannot reach " + url + ": " + Reason(exc));
                }
                if (response.StatusCode != HttpStatusCode.OK)
                {
                    int status = (int)response.StatusCode;
                    string text = Encoding.UTF8.GetString(answer);
                    string message = null;
                    try
                    {
                        var doc = Json.DeserializeObject(text) as Dictionary<string, object>;
                        object error;
                        if (doc != null && doc.TryGetValue("error", out error) && error != null) message = error.ToString();
                    }
                    catch (Exception) { }
                    if (message == null) message = text.Length > 200 ? text.Substring(0, 200) : text;
                    string line = "HTTP " + status + " from POST " + route + ": " + message;
                    IEnumerable<string> retry;
                    if (status == 503 && response.Headers.TryGetValues("Retry-After", out retry))
                        line += " (Retry-After: " + string.Join(", ", retry) + ")";
                    throw new Fail(1, line);
                }
                return Tuple.Create(response, answer);
            }

            /// <summary>The innermost exception's message: "Connection refused" rather than "An error occurred".</summary>
            static string Reason(Exception exc)
            {
                while (exc.InnerException != null) exc = exc.InnerException;
                return exc.Message;
            }
        }

        /// <summary>Binary latency: 1 warm-up, then `count` timed round trips; returns the latency entry.</summary>
        static Dictionary<string, object> Time(Server server, Tuple<byte[], int> request, long batch, int count)
        {
            server.Post(request.Item1, request.Item2);
            var ms = new List<double>();
            for (int i = 0; i < count; i++)
            {
                var watch = Stopwatch.StartNew();
                server.Post(request.Item1, request.Item2);
                watch.Stop();
                ms.Add(watch.Elapsed.TotalMilliseconds);
            }
            ms.Sort();
            double median = count % 2 == 1 ? ms[count / 2] : (ms[count / 2 - 1] + ms[count / 2]) / 2;
            return new Dictionary<string, object> { { "batch", batch }, { "median_ms", Math.Round(median, 4) }, { "iterations", count } };
        }

        // ---- answers ------------------------------------------------------------------------------------------

        /// <summary>(model_version, outputs by name) from a JSON or binary-extension answer.</summary>
        static Tuple<string, Dictionary<string, Output>> Parse(string label, Tuple<HttpResponseMessage, byte[]> reply, string model)
        {
            var response = reply.Item1;
            byte[] body = reply.Item2;
            int headerLength = body.Length;
            IEnumerable<string> values;
            if (response.Headers.TryGetValues("Inference-Header-Content-Length", out values)
                || response.Content.Headers.TryGetValues("Inference-Header-Content-Length", out values))
            {
                if (!int.TryParse(values.First().Trim(), NumberStyles.None, Inv, out headerLength) || headerLength > body.Length)
                    throw new Fail(1, label + ": the answer's Inference-Header-Content-Length '" + values.First() + "' does not fit its " + body.Length + " bytes");
            }
            Dictionary<string, object> doc;
            try { doc = Json.DeserializeObject(Encoding.UTF8.GetString(body, 0, headerLength)) as Dictionary<string, object>; }
            catch (Exception exc) { throw new Fail(1, label + ": the server's answer is not valid JSON: " + exc.Message); }
            if (doc == null) throw new Fail(1, label + ": the server's answer is not a JSON object");
            object version;
            string modelVersion = doc.TryGetValue("model_version", out version) && version != null ? Convert.ToString(version, Inv) : "";

            var outputs = new Dictionary<string, Output>();
            int offset = headerLength;
            object list;
            if (!doc.TryGetValue("outputs", out list) || !(list is object[]))
                throw new Fail(1, label + ": the server's answer has no 'outputs' list");
            foreach (var item in (object[])list)
            {
                var entry = item as Dictionary<string, object>;
                object name, datatype, shape;
                if (entry == null || !entry.TryGetValue("name", out name) || !(name is string)
                    || !entry.TryGetValue("datatype", out datatype) || !(datatype is string) || !ItemSize.ContainsKey((string)datatype)
                    || !entry.TryGetValue("shape", out shape) || !(shape is object[]) || !((object[])shape).All(IsNumber))
                    throw new Fail(1, label + ": the server's answer has an output without a usable name, datatype (FP32, FP16, INT64, INT32, UINT8) and shape");
                var output = new Output
                {
                    Name = (string)name,
                    Datatype = (string)datatype,
                    Shape = ((object[])shape).Select(d => Convert.ToInt64(d, Inv)).ToArray(),
                };
                long count = output.Shape.Aggregate(1L, (a, d) => a * d);
                object parameters, size, data;
                if (entry.TryGetValue("parameters", out parameters) && parameters is Dictionary<string, object>
                    && ((Dictionary<string, object>)parameters).TryGetValue("binary_data_size", out size) && IsNumber(size))
                {
                    long bytes = Convert.ToInt64(size, Inv);
                    if (bytes != count * ItemSize[output.Datatype] || offset + bytes > body.Length)
                        throw new Fail(1, label + ": output '" + output.Name + "' has binary_data_size " + bytes + "; shape " + ShapeText(output.Shape) + " " + output.Datatype + " needs " + count * ItemSize[output.Datatype] + " (" + (body.Length - offset) + " bytes left in the answer)");
                    output.Raw = new byte[bytes];
                    Array.Copy(body, offset, output.Raw, 0, bytes);
                    offset += (int)bytes;
                    output.Values = Decode(output.Raw, 0, output.Raw.Length, output.Datatype);
                }
                else if (entry.TryGetValue("data", out data) && data is object[])
                {
                    var flat = new List<double>();
                    Flatten(data, flat);
                    if (flat.Count != count)
                        throw new Fail(1, label + ": output '" + output.Name + "' holds " + flat.Count + " values, shape " + ShapeText(output.Shape) + " needs " + count);
                    output.Values = flat.ToArray();
                }
                else
                    throw new Fail(1, label + ": output '" + output.Name + "' has neither 'data' nor parameters.binary_data_size");
                outputs[output.Name] = output;
            }
            return Tuple.Create(modelVersion, outputs);
        }

        static void Flatten(object node, List<double> into)
        {
            var array = node as object[];
            if (array != null) { foreach (var item in array) Flatten(item, into); }
            else if (node == null) into.Add(double.NaN);   // a non-finite value some encoders write as null
            else into.Add(Convert.ToDouble(node, Inv));
        }

        /// <summary>Every golden output must be present, shaped alike and within |got - want| <= atol + rtol * |want|.</summary>
        static void Check(string label, Dictionary<string, Output> got, List<Tensor> goldenOut, double atol, double rtol)
        {
            foreach (var want in goldenOut)
            {
                Output output;
                if (!got.TryGetValue(want.Name, out output))
                    throw new Fail(1, label + ": the server returned no output '" + want.Name + "'");
                if (!output.Shape.SequenceEqual(want.Shape))
                    throw new Fail(1, label + ": output '" + want.Name + "' has shape " + ShapeText(output.Shape) + ", golden has " + ShapeText(want.Shape));
                double[] expected = Decode(want.Bytes, 0, want.Bytes.Length, Datatypes[want.Dtype]);
                double worst = 0;
                bool ok = true;
                for (int i = 0; i < expected.Length; i++)
                {
                    double a = output.Values[i], b = expected[i];
                    if (a.Equals(b)) continue;   // also NaN == NaN and equal infinities
                    double diff = Math.Abs(a - b);
                    if (double.IsNaN(diff)) diff = double.PositiveInfinity;
                    worst = Math.Max(worst, diff);
                    if (!(diff <= atol + rtol * Math.Abs(b))) ok = false;
                }
                if (!ok)
                    throw new Fail(1, label + ": output '" + want.Name + "' differs from golden by up to " + Short(worst, "G4") + " (atol " + Short(atol, "G6") + ", rtol " + Short(rtol, "G6") + ")");
            }
        }

        // ---- numbers ------------------------------------------------------------------------------------------

        /// <summary>Raw little-endian elements of a v2 datatype as doubles.</summary>
        static double[] Decode(byte[] bytes, int offset, int length, string datatype)
        {
            int size = ItemSize[datatype];
            var values = new double[length / size];
            var element = new byte[8];
            for (int i = 0; i < values.Length; i++)
            {
                Array.Copy(bytes, offset + i * size, element, 0, size);
                if (!BitConverter.IsLittleEndian) Array.Reverse(element, 0, size);
                switch (datatype)
                {
                    case "FP32": values[i] = BitConverter.ToSingle(element, 0); break;
                    case "FP16": values[i] = HalfToDouble(BitConverter.ToUInt16(element, 0)); break;
                    case "INT64": values[i] = BitConverter.ToInt64(element, 0); break;
                    case "INT32": values[i] = BitConverter.ToInt32(element, 0); break;
                    default: values[i] = element[0]; break;   // UINT8
                }
            }
            return values;
        }

        static double HalfToDouble(ushort h)
        {
            int sign = (h >> 15) != 0 ? -1 : 1, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
            if (exponent == 0) return sign * mantissa * Math.Pow(2, -24);                      // zero, subnormal
            if (exponent == 31) return mantissa == 0 ? sign * double.PositiveInfinity : double.NaN;
            return sign * (1 + mantissa / 1024.0) * Math.Pow(2, exponent - 15);
        }

        /// <summary>A JSON number that reads back to the same element: shortest round-trip for floats.</summary>
        static string NumberText(double value, string datatype)
        {
            if (!datatype.StartsWith("FP", StringComparison.Ordinal)) return ((long)value).ToString(Inv);
            if (double.IsNaN(value) || double.IsInfinity(value))
                throw new Fail(2, "a golden input holds NaN or Infinity, which JSON cannot carry; refusing it");
            float f = (float)value;
            string text = f.ToString("R", Inv);
            if (float.Parse(text, Inv) != f) text = f.ToString("G9", Inv);
            return text;
        }

        static string Short(double value, string format)
        {
            return value.ToString(format, Inv).Replace("E", "e");
        }

        // ---- small helpers ------------------------------------------------------------------------------------

        static object Get(Dictionary<string, object> obj, string key, string where)
        {
            object value;
            if (!obj.TryGetValue(key, out value) || value == null)
                throw new Fail(2, where + " has no '" + key + "'; refusing the bundle");
            return value;
        }

        static Dictionary<string, object> Obj(object value, string where)
        {
            var obj = value as Dictionary<string, object>;
            if (obj == null) throw new Fail(2, where + " is not a JSON object; refusing the bundle");
            return obj;
        }

        static string Str(Dictionary<string, object> obj, string key, string where)
        {
            var value = Get(obj, key, where) as string;
            if (value == null) throw new Fail(2, where + ": '" + key + "' is not a string; refusing the bundle");
            return value;
        }

        static object[] List(Dictionary<string, object> obj, string key, string where)
        {
            var value = Get(obj, key, where) as object[];
            if (value == null) throw new Fail(2, where + ": '" + key + "' is not a list; refusing the bundle");
            return value;
        }

        static double Num(Dictionary<string, object> obj, string key, string where)
        {
            var value = Get(obj, key, where);
            if (!IsNumber(value)) throw new Fail(2, where + ": '" + key + "' is not a number; refusing the bundle");
            return Convert.ToDouble(value, Inv);
        }

        static bool IsNumber(object value)
        {
            return value is int || value is long || value is decimal || value is double;
        }

        static string ShapeText(System.Collections.IEnumerable dims)
        {
            return "[" + string.Join(", ", dims.Cast<object>().Select(d => Convert.ToString(d, Inv))) + "]";
        }

        static string DtypeOf(string datatype)
        {
            return Datatypes.First(kv => kv.Value == datatype).Key;
        }

        static string Head(string hex)
        {
            return hex.Length > 12 ? hex.Substring(0, 12) : hex;
        }

        static string OneLine(string text)
        {
            return string.Join(" ", (text ?? "").Split(new[] { '\r', '\n' }, StringSplitOptions.RemoveEmptyEntries)).Trim();
        }

        /// <summary>"Mono 6.8.0.105" under Mono, ".NET Framework 4.0.30319.42000" (CLR version) elsewhere.</summary>
        static string RuntimeVersion()
        {
            var mono = Type.GetType("Mono.Runtime");
            var display = mono?.GetMethod("GetDisplayName", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static);
            if (display != null)
                return "Mono " + Convert.ToString(display.Invoke(null, null), Inv).Split(' ')[0];
            return ".NET " + Environment.Version;
        }
    }
}
