/*
 * torchport C runner: run a bundle's golden inputs through an ONNX artifact with ONNX Runtime's C API and write
 * the outputs.
 *
 * Usage: ORT_DYLIB_PATH=/path/to/libonnxruntime.so torchport-runner BUNDLE OUT_DIR [--artifact PATH]
 *
 * Reads only BUNDLE/manifest.json (jansson) and the files it names. A bundle it will not trust (a path that is
 * absolute or has a '..' component, a missing file, a SHA-256 mismatch, golden inputs that disagree with the
 * declared inputs) is refused with one "error: ..." line on stderr and exit code 2, before ONNX Runtime is even
 * loaded. Any other failure is one "error: ..." line and exit code 1. On success it writes OUT_DIR/<output>.bin
 * (raw little-endian, row-major) and then OUT_DIR/result.json, and prints the path of result.json.
 *
 * ONNX Runtime is loaded at run time with dlopen() from ORT_DYLIB_PATH, so the binary links no ONNX Runtime and
 * runs on any release that provides the C API version of the header it was compiled with (ORT_API_VERSION).
 *
 * Build: make ORT_INCLUDE_DIR=<dir holding onnxruntime_c_api.h>   (cc -std=c11 ... -ljansson -lcrypto -ldl)
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "onnxruntime_c_api.h"

#define USAGE "usage: torchport-runner BUNDLE OUT_DIR [--artifact PATH]"
#define LIBRARY_HINT "set ORT_DYLIB_PATH to the ONNX Runtime shared library (libonnxruntime.so)"

/* ---- errors: the first one wins; main prints it as one line ---------------------------------------------- */

enum { EXIT_REFUSED = 2, EXIT_FAILED = 1 };

static char error_text[4096];
static int error_code;

static void set_error(int code, const char *format, va_list args) {
    if (error_code != 0) {
        return;
    }
    error_code = code;
    vsnprintf(error_text, sizeof error_text, format, args);
}

/* A bundle this runner will not run: exit code 2 and no result.json. Returns -1 for `return refuse(...)`. */
static int refuse(const char *format, ...) {
    va_list args;
    va_start(args, format);
    set_error(EXIT_REFUSED, format, args);
    va_end(args);
    return -1;
}

/* An output name becomes OUT_DIR/<name>.bin: refuse one that is not a plain file name (a C string holds no NUL). */
static int check_output_name(const char *name) {
    if (name[0] == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || strpbrk(name, "/\\") != NULL) {
        return refuse("output name '%s' is not a plain file name; refusing it", name);
    }
    return 0;
}

/* Any other failure: exit code 1. */
static int fail(const char *format, ...) {
    va_list args;
    va_start(args, format);
    set_error(EXIT_FAILED, format, args);
    va_end(args);
    return -1;
}

/* Prints "error: <message>" with every run of whitespace (ORT messages can span lines) folded into one space. */
static void print_error(void) {
    fputs("error: ", stderr);
    int space = 0;
    for (const char *c = error_text; *c != '\0'; c++) {
        if (*c == ' ' || *c == '\n' || *c == '\r' || *c == '\t') {
            space = 1;
            continue;
        }
        if (space && c != error_text) {
            fputc(' ', stderr);
        }
        space = 0;
        fputc(*c, stderr);
    }
    fputc('\n', stderr);
}

/* ---- dtypes --------------------------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    size_t size;
    ONNXTensorElementDataType onnx;
    int feedable; /* float16 is written as an output but not fed: refused with the "not supported" line */
} Dtype;

static const Dtype DTYPES[] = {
    {"float32", 4, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 1},  {"int64", 8, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, 1},
    {"int32", 4, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, 1},    {"uint8", 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1},
    {"float16", 2, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, 0},
};
#define DTYPE_COUNT (sizeof DTYPES / sizeof DTYPES[0])

static const Dtype *dtype_by_name(const char *name) {
    for (size_t i = 0; i < DTYPE_COUNT; i++) {
        if (strcmp(DTYPES[i].name, name) == 0) {
            return &DTYPES[i];
        }
    }
    return NULL;
}

static const Dtype *dtype_by_onnx(ONNXTensorElementDataType onnx) {
    for (size_t i = 0; i < DTYPE_COUNT; i++) {
        if (DTYPES[i].onnx == onnx) {
            return &DTYPES[i];
        }
    }
    return NULL;
}

/* Bundle tensors are little-endian; on a big-endian host every element is byte-swapped in place. */
static int host_is_little_endian(void) {
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

static void swap_elements(unsigned char *data, size_t bytes, size_t size) {
    if (size < 2 || host_is_little_endian()) {
        return;
    }
    for (size_t at = 0; at + size <= bytes; at += size) {
        for (size_t i = 0; i < size / 2; i++) {
            unsigned char t = data[at + i];
            data[at + i] = data[at + size - 1 - i];
            data[at + size - 1 - i] = t;
        }
    }
}

/* ---- manifest helpers ----------------------------------------------------------------------------------- */

/* A string field, or "" when it is missing or not a string (as a missing field reads in the other runners). */
static const char *text(const json_t *object, const char *key) {
    const char *value = json_string_value(json_object_get(object, key));
    return value != NULL ? value : "";
}

/* Formats a shape as "[batch, 1, 8, 8]" (declared dims may be the string "batch", shown unquoted). */
static void format_shape(const json_t *shape, char *out, size_t size) {
    size_t used = (size_t)snprintf(out, size, "[");
    size_t i;
    json_t *dim;
    json_array_foreach(shape, i, dim) {
        char item[64];
        if (json_is_string(dim)) {
            snprintf(item, sizeof item, "%s", json_string_value(dim));
        } else if (json_is_integer(dim)) {
            snprintf(item, sizeof item, "%" JSON_INTEGER_FORMAT, json_integer_value(dim));
        } else if (json_is_real(dim)) {
            snprintf(item, sizeof item, "%g", json_real_value(dim));
        } else {
            snprintf(item, sizeof item, "%s", json_is_null(dim) ? "null" : "?");
        }
        if (used < size) {
            used += (size_t)snprintf(out + used, size - used, "%s%s", i > 0 ? ", " : "", item);
        }
    }
    if (used < size) {
        snprintf(out + used, size - used, "]");
    }
}

static void format_dims(const int64_t *dims, size_t rank, char *out, size_t size) {
    size_t used = (size_t)snprintf(out, size, "[");
    for (size_t i = 0; i < rank && used < size; i++) {
        used += (size_t)snprintf(out + used, size - used, "%s%lld", i > 0 ? ", " : "", (long long)dims[i]);
    }
    if (used < size) {
        snprintf(out + used, size - used, "]");
    }
}

/* ---- bundle files --------------------------------------------------------------------------------------- */

/* Keeps every manifest path inside the bundle: refuses "", absolute paths, backslashes and '..' components. */
static char *safe_path(const char *bundle, const char *relative) {
    int bad = relative[0] == '\0' || relative[0] == '/' || strchr(relative, '\\') != NULL;
    for (const char *part = relative; !bad; part++) {
        const char *end = strchr(part, '/');
        size_t length = end != NULL ? (size_t)(end - part) : strlen(part);
        bad = length == 2 && part[0] == '.' && part[1] == '.';
        if (end == NULL) {
            break;
        }
        part = end;
    }
    if (bad) {
        refuse("bundle path '%s' is absolute or contains '..'; refusing it", relative);
        return NULL;
    }
    size_t size = strlen(bundle) + strlen(relative) + 2;
    char *path = malloc(size);
    if (path == NULL) {
        fail("out of memory");
        return NULL;
    }
    snprintf(path, size, "%s/%s", bundle, relative);
    return path;
}

static int is_regular_file(const char *path) {
    struct stat info;
    return stat(path, &info) == 0 && S_ISREG(info.st_mode);
}

static void hex(const unsigned char *digest, unsigned length, char *out) {
    for (unsigned i = 0; i < length; i++) {
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
    }
}

static int check_digest(const char *relative, const char *actual, const char *expected) {
    if (strcmp(actual, expected) == 0) {
        return 0;
    }
    return refuse("bundle file '%s' fails its checksum: SHA-256 %.12s... != manifest %.12s...; refusing it", relative,
                  actual, expected);
}

/*
 * Checks one bundle file (safe path, present, SHA-256 against `expected`). With `data` non-NULL the file is read
 * whole and the checksum verified on those very bytes, which are returned (the golden tensors fed to the model);
 * with `data` NULL it is streamed through the digest (the model, which ONNX Runtime then loads by path, so that an
 * ONNX file with external data beside it still loads). Returns the full path (caller frees) or NULL.
 */
static char *checked_file(const char *bundle, const char *relative, const char *expected, unsigned char **data,
                          size_t *size) {
    char *path = safe_path(bundle, relative);
    if (path == NULL) {
        return NULL;
    }
    if (!is_regular_file(path)) {
        refuse("bundle file '%s' is missing", relative);
        free(path);
        return NULL;
    }
    FILE *file = fopen(path, "rb");
    EVP_MD_CTX *digest = EVP_MD_CTX_new();
    unsigned char *buffer = NULL;
    size_t total = 0, capacity = 0;
    int status = 0;
    if (file == NULL) {
        status = fail("cannot read '%s': %s", path, strerror(errno));
    } else if (digest == NULL || EVP_DigestInit_ex(digest, EVP_sha256(), NULL) != 1) {
        status = fail("cannot start a SHA-256 digest");
    }
    unsigned char chunk[1 << 16];
    size_t got = sizeof chunk;
    while (status == 0 && got == sizeof chunk) {
        got = fread(chunk, 1, sizeof chunk, file);
        if (ferror(file)) {
            status = fail("cannot read '%s': %s", path, strerror(errno));
        } else if (EVP_DigestUpdate(digest, chunk, got) != 1) {
            status = fail("SHA-256 of '%s' failed", relative);
        } else if (data != NULL && total + got > capacity) { /* keeping the bytes: grow the buffer */
            capacity = capacity == 0 ? sizeof chunk : capacity * 2;
            unsigned char *bigger = realloc(buffer, capacity);
            if (bigger == NULL) {
                status = fail("out of memory reading '%s'", relative);
            }
            buffer = bigger != NULL ? bigger : buffer;
        }
        if (status == 0 && data != NULL) {
            memcpy(buffer + total, chunk, got);
        }
        total += got;
    }
    unsigned char sum[EVP_MAX_MD_SIZE];
    unsigned length = 0;
    char actual[2 * EVP_MAX_MD_SIZE + 1] = "";
    if (status == 0 && EVP_DigestFinal_ex(digest, sum, &length) != 1) {
        status = fail("SHA-256 of '%s' failed", relative);
    }
    if (status == 0) {
        hex(sum, length, actual);
        status = check_digest(relative, actual, expected);
    }
    EVP_MD_CTX_free(digest);
    if (file != NULL) {
        fclose(file);
    }
    if (status != 0) {
        free(buffer);
        free(path);
        return NULL;
    }
    if (data != NULL) {
        *data = buffer;
        *size = total;
    }
    return path;
}

/* ---- manifest checks ------------------------------------------------------------------------------------ */

/* A golden input that passed its checksum: its entry in the manifest, dims and bytes (host byte order). */
typedef struct {
    const char *name; /* owned by the manifest */
    const char *dtype;
    const json_t *shape;
    int64_t *dims;
    size_t rank;
    unsigned char *data;
    size_t bytes;
} Golden;

static const char *precision_of(const json_t *artifact) {
    const json_t *value = json_object_get(artifact, "precision");
    return json_is_string(value) ? json_string_value(value) : "fp32";
}

/* The artifact named on the command line, or the first fp32 ONNX one. */
static const json_t *pick_artifact(const json_t *manifest, const char *wanted) {
    size_t i;
    json_t *artifact;
    json_array_foreach(json_object_get(manifest, "artifacts"), i, artifact) {
        const char *kind = text(artifact, "kind");
        if (wanted == NULL && strcmp(kind, "onnx") == 0 && strcmp(precision_of(artifact), "fp32") == 0) {
            return artifact;
        }
        if (wanted != NULL && strcmp(text(artifact, "path"), wanted) == 0) {
            if (strcmp(kind, "onnx") != 0) {
                refuse("artifact '%s' is %s, not onnx; refusing it", wanted, kind);
                return NULL;
            }
            return artifact;
        }
    }
    if (wanted != NULL) {
        refuse("the manifest lists no ONNX artifact '%s'", wanted);
    } else {
        refuse("the manifest lists no ONNX artifact (kind onnx, precision fp32)");
    }
    return NULL;
}

/* Same rank, and every dim equal, except the string "batch" which matches any size >= 1. */
static int shape_matches(const json_t *declared, const Golden *golden) {
    if (!json_is_array(declared) || json_array_size(declared) != golden->rank) {
        return 0;
    }
    size_t i;
    json_t *dim;
    json_array_foreach(declared, i, dim) {
        if (json_is_string(dim)) {
            if (strcmp(json_string_value(dim), "batch") != 0 || golden->dims[i] < 1) {
                return 0;
            }
        } else if (!json_is_integer(dim) || json_integer_value(dim) != golden->dims[i]) {
            return 0;
        }
    }
    return 1;
}

/*
 * Compares the golden tensors that will be fed with the model's declared inputs, before any run, so that a
 * bundle whose golden data does not fit its model is refused with a clear reason instead of an ORT error.
 */
static int check_inputs(const json_t *declared, const Golden *golden, size_t count) {
    size_t i;
    json_t *input;
    json_array_foreach(declared, i, input) {
        const char *name = text(input, "name");
        int found = 0;
        for (size_t g = 0; g < count && !found; g++) {
            found = strcmp(golden[g].name, name) == 0;
        }
        if (!found) {
            return refuse("input '%s': the manifest declares it but golden/ has no tensor of that name; refusing it",
                          name);
        }
    }
    for (size_t g = 0; g < count; g++) {
        const Golden *tensor = &golden[g];
        const json_t *match = NULL;
        json_array_foreach(declared, i, input) {
            if (match == NULL && strcmp(text(input, "name"), tensor->name) == 0) {
                match = input;
            }
        }
        if (match == NULL) {
            return refuse("golden input '%s' is not among the manifest's inputs; refusing it", tensor->name);
        }
        if (strcmp(text(match, "dtype"), tensor->dtype) != 0) {
            return refuse("input '%s': the manifest declares dtype %s, the golden tensor is %s; refusing it",
                          tensor->name, text(match, "dtype"), tensor->dtype);
        }
        char want[512], have[512];
        format_dims(tensor->dims, tensor->rank, have, sizeof have);
        if (!shape_matches(json_object_get(match, "shape"), tensor)) {
            format_shape(json_object_get(match, "shape"), want, sizeof want);
            return refuse("input '%s': the manifest declares shape %s, the golden tensor is %s; refusing it",
                          tensor->name, want, have);
        }
        const Dtype *dtype = dtype_by_name(tensor->dtype);
        if (dtype == NULL || !dtype->feedable) {
            return refuse("dtype %s is not supported by this runner", tensor->dtype);
        }
        long long need = (long long)dtype->size;
        for (size_t d = 0; d < tensor->rank; d++) {
            need *= tensor->dims[d];
        }
        if (need < 0 || (unsigned long long)need != tensor->bytes) {
            return refuse("golden input '%s' holds %zu bytes, its shape %s and dtype %s need %lld; refusing it",
                          tensor->name, tensor->bytes, have, tensor->dtype, need);
        }
    }
    return 0;
}

/* Reads and checks manifest.golden.inputs[]: each file's path and SHA-256, then its dims. */
static int load_golden(const char *bundle, const json_t *manifest, Golden **out, size_t *count) {
    const json_t *entries = json_object_get(json_object_get(manifest, "golden"), "inputs");
    size_t n = json_array_size(entries);
    Golden *golden = calloc(n > 0 ? n : 1, sizeof *golden);
    if (golden == NULL) {
        return fail("out of memory");
    }
    *out = golden;
    *count = n;
    for (size_t g = 0; g < n; g++) {
        const json_t *entry = json_array_get(entries, g);
        Golden *tensor = &golden[g];
        tensor->name = text(entry, "name");
        tensor->dtype = text(entry, "dtype");
        tensor->shape = json_object_get(entry, "shape");
        char *path = checked_file(bundle, text(entry, "path"), text(entry, "sha256"), &tensor->data, &tensor->bytes);
        if (path == NULL) {
            return -1;
        }
        free(path);
    }
    for (size_t g = 0; g < n; g++) {
        Golden *tensor = &golden[g];
        tensor->rank = json_array_size(tensor->shape);
        tensor->dims = calloc(tensor->rank > 0 ? tensor->rank : 1, sizeof *tensor->dims);
        if (tensor->dims == NULL) {
            return fail("out of memory");
        }
        if (!json_is_array(tensor->shape)) {
            return fail("manifest.json: golden input '%s' has no shape list", tensor->name);
        }
        for (size_t d = 0; d < tensor->rank; d++) {
            const json_t *dim = json_array_get(tensor->shape, d);
            if (!json_is_integer(dim)) {
                return fail("manifest.json: golden input '%s' has a shape that is not a list of integers",
                            tensor->name);
            }
            tensor->dims[d] = json_integer_value(dim);
        }
    }
    return 0;
}

static void free_golden(Golden *golden, size_t count) {
    for (size_t g = 0; golden != NULL && g < count; g++) {
        free(golden[g].dims);
        free(golden[g].data);
    }
    free(golden);
}

/* ---- ONNX Runtime --------------------------------------------------------------------------------------- */

typedef struct {
    void *library; /* from dlopen(); never closed, see close_engine */
    const OrtApi *api;
    const char *version;
    OrtEnv *env;
    OrtSessionOptions *options;
    OrtSession *session;
    OrtMemoryInfo *memory;
    OrtAllocator *allocator; /* ORT's default allocator: not released */
    const char **input_names; /* borrowed from the golden entries */
    size_t input_count;
    char **output_names; /* allocated by ORT's allocator */
    size_t output_count;
} Engine;

/* Turns a non-NULL OrtStatus into fail(...) and releases it; returns 0 when the call succeeded. */
static int ort_ok(const OrtApi *api, OrtStatus *status, const char *what) {
    if (status == NULL) {
        return 0;
    }
    fail("%s: %s", what, api->GetErrorMessage(status));
    api->ReleaseStatus(status);
    return -1;
}

/* Loads the library named by ORT_DYLIB_PATH (checked first, so a missing library is one clear refusal). */
static int load_library(Engine *engine) {
    const char *library = getenv("ORT_DYLIB_PATH");
    if (library == NULL || library[0] == '\0') {
        return refuse(LIBRARY_HINT "; it is not set");
    }
    struct stat info;
    if (stat(library, &info) != 0 || S_ISDIR(info.st_mode)) {
        return refuse(LIBRARY_HINT "; '%s' does not exist", library);
    }
    engine->library = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (engine->library == NULL) {
        return fail("cannot load ONNX Runtime: %s", dlerror());
    }
    const OrtApiBase *(*get_api_base)(void) = NULL;
    /* POSIX dlsym returns void*; converting it to a function pointer goes through memcpy to stay within C11. */
    void *symbol = dlsym(engine->library, "OrtGetApiBase");
    if (symbol == NULL) {
        return fail("'%s' has no OrtGetApiBase: not an ONNX Runtime library", library);
    }
    memcpy(&get_api_base, &symbol, sizeof get_api_base);
    const OrtApiBase *base = get_api_base();
    engine->version = base->GetVersionString();
    /* C API version N ships with ONNX Runtime 1.N. An older library's GetApi would print its own complaint on
     * stderr before returning NULL; checking the version first keeps the error to one line. */
    int major = 0, minor = 0;
    int parsed = sscanf(engine->version, "%d.%d", &major, &minor) == 2;
    if (!parsed || (major == 1 && minor < ORT_API_VERSION) || major < 1) {
        return fail("ONNX Runtime %s at '%s' is too old: this runner needs C API version %d (1.%d or newer)",
                    engine->version, library, ORT_API_VERSION, ORT_API_VERSION);
    }
    engine->api = base->GetApi(ORT_API_VERSION);
    if (engine->api == NULL) {
        return fail("ONNX Runtime %s at '%s' does not provide C API version %d", engine->version, library,
                    ORT_API_VERSION);
    }
    return 0;
}

/* One single-threaded CPU session (so that latency compares across runners and machines), logging errors only. */
static int open_session(Engine *engine, const char *model, const Golden *golden, size_t count) {
    const OrtApi *api = engine->api;
    if (ort_ok(api, api->CreateEnv(ORT_LOGGING_LEVEL_ERROR, "torchport", &engine->env), "cannot start ONNX Runtime") ||
        ort_ok(api, api->CreateSessionOptions(&engine->options), "cannot create session options") ||
        ort_ok(api, api->SetIntraOpNumThreads(engine->options, 1), "SetIntraOpNumThreads") ||
        ort_ok(api, api->SetInterOpNumThreads(engine->options, 1), "SetInterOpNumThreads") ||
        ort_ok(api, api->SetSessionLogSeverityLevel(engine->options, ORT_LOGGING_LEVEL_ERROR), "log level") ||
        ort_ok(api, api->CreateSession(engine->env, model, engine->options, &engine->session), "cannot load model") ||
        ort_ok(api, api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &engine->memory), "memory info") ||
        ort_ok(api, api->GetAllocatorWithDefaultOptions(&engine->allocator), "allocator") ||
        ort_ok(api, api->SessionGetOutputCount(engine->session, &engine->output_count), "output count")) {
        return -1;
    }
    engine->input_names = calloc(count > 0 ? count : 1, sizeof *engine->input_names);
    engine->output_names = calloc(engine->output_count > 0 ? engine->output_count : 1, sizeof *engine->output_names);
    if (engine->input_names == NULL || engine->output_names == NULL) {
        return fail("out of memory");
    }
    engine->input_count = count;
    for (size_t i = 0; i < count; i++) {
        engine->input_names[i] = golden[i].name;
    }
    /* Output names come from the model itself, in the session's order. */
    for (size_t i = 0; i < engine->output_count; i++) {
        if (ort_ok(api, api->SessionGetOutputName(engine->session, i, engine->allocator, &engine->output_names[i]),
                   "output name") ||
            check_output_name(engine->output_names[i])) {
            return -1;
        }
    }
    return 0;
}

static void close_engine(Engine *engine) {
    const OrtApi *api = engine->api;
    if (api != NULL) {
        for (size_t i = 0; engine->output_names != NULL && i < engine->output_count; i++) {
            if (engine->output_names[i] != NULL) {
                OrtStatus *status = api->AllocatorFree(engine->allocator, engine->output_names[i]);
                if (status != NULL) {
                    api->ReleaseStatus(status);
                }
            }
        }
        if (engine->memory != NULL) {
            api->ReleaseMemoryInfo(engine->memory);
        }
        if (engine->session != NULL) {
            api->ReleaseSession(engine->session);
        }
        if (engine->options != NULL) {
            api->ReleaseSessionOptions(engine->options);
        }
        if (engine->env != NULL) {
            api->ReleaseEnv(engine->env);
        }
    }
    free(engine->output_names);
    free(engine->input_names);
    /* The library stays loaded until the process exits: unloading it with dlclose() would turn the buffers ONNX
     * Runtime keeps in its globals (CPU info, thread-pool state) into leaks, and it has no unload hook to free them. */
}

static void release_values(const OrtApi *api, OrtValue **values, size_t count) {
    for (size_t i = 0; values != NULL && i < count; i++) {
        if (values[i] != NULL) {
            api->ReleaseValue(values[i]);
            values[i] = NULL;
        }
    }
}

/*
 * One input tensor per golden input over its first `batch` rows (rows are contiguous in row-major order, so this
 * is the start of the buffer under a smaller first dim; nothing is copied). The values borrow the golden bytes.
 */
static int make_feed(Engine *engine, Golden *golden, int64_t batch, OrtValue **feed) {
    const OrtApi *api = engine->api;
    for (size_t i = 0; i < engine->input_count; i++) {
        Golden *tensor = &golden[i];
        size_t bytes = tensor->bytes;
        int64_t saved = tensor->rank > 0 ? tensor->dims[0] : 0;
        if (tensor->rank > 0 && saved > 0 && batch < saved) {
            bytes = bytes / (size_t)saved * (size_t)batch;
            tensor->dims[0] = batch;
        }
        OrtStatus *status = api->CreateTensorWithDataAsOrtValue(engine->memory, tensor->data, bytes, tensor->dims,
                                                                tensor->rank, dtype_by_name(tensor->dtype)->onnx,
                                                                &feed[i]);
        if (tensor->rank > 0) {
            tensor->dims[0] = saved; /* ORT copied the shape */
        }
        if (ort_ok(api, status, "cannot create an input tensor")) {
            return -1;
        }
    }
    return 0;
}

static int run_once(Engine *engine, OrtValue *const *feed, OrtValue **outputs) {
    return ort_ok(engine->api,
                  engine->api->Run(engine->session, NULL, engine->input_names, (const OrtValue *const *)feed,
                                   engine->input_count, (const char *const *)engine->output_names,
                                   engine->output_count, outputs),
                  "run failed");
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/*
 * One warm-up run, then the median of `iterations` timed runs in milliseconds. The input tensors are built once,
 * outside the timed region; each timed run includes ORT allocating the outputs, as the other runners do.
 */
static int time_batch(Engine *engine, Golden *golden, int64_t batch, int iterations, double *median) {
    OrtValue **feed = calloc(engine->input_count + 1, sizeof *feed);
    OrtValue **outputs = calloc(engine->output_count + 1, sizeof *outputs);
    double *times = calloc((size_t)iterations, sizeof *times);
    int status = feed != NULL && outputs != NULL && times != NULL ? 0 : fail("out of memory");
    if (status == 0) {
        status = make_feed(engine, golden, batch, feed);
    }
    for (int i = -1; status == 0 && i < iterations; i++) {
        double start = now_ms();
        status = run_once(engine, feed, outputs);
        double elapsed = now_ms() - start;
        release_values(engine->api, outputs, engine->output_count);
        if (i >= 0) {
            times[i] = elapsed;
        }
    }
    if (status == 0) {
        qsort(times, (size_t)iterations, sizeof *times, compare_doubles);
        *median = iterations % 2 == 1 ? times[iterations / 2] : (times[iterations / 2 - 1] + times[iterations / 2]) / 2;
    }
    release_values(engine->api, feed, engine->input_count);
    free(feed);
    free(outputs);
    free(times);
    return status;
}

/* ---- output --------------------------------------------------------------------------------------------- */

static int make_dirs(const char *path) {
    char *copy = strdup(path);
    if (copy == NULL) {
        return fail("out of memory");
    }
    int status = 0;
    for (char *at = copy + 1; status == 0; at++) {
        if (*at == '/' || *at == '\0') {
            char saved = *at;
            *at = '\0';
            if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
                status = fail("cannot create '%s': %s", copy, strerror(errno));
            }
            *at = saved;
            if (saved == '\0') {
                break;
            }
        }
    }
    free(copy);
    return status;
}

static char *join(const char *folder, const char *name) {
    size_t size = strlen(folder) + strlen(name) + 2;
    char *path = malloc(size);
    if (path != NULL) {
        snprintf(path, size, "%s/%s", folder, name);
    }
    return path;
}

static int write_file(const char *path, const void *data, size_t size) {
    FILE *file = fopen(path, "wb");
    if (file == NULL) {
        return fail("cannot write '%s': %s", path, strerror(errno));
    }
    size_t written = fwrite(data, 1, size, file);
    int closed = fclose(file);
    if (written != size || closed != 0) {
        return fail("cannot write '%s': %s", path, strerror(errno));
    }
    return 0;
}

/* Writes one output as OUT_DIR/<name>.bin (raw little-endian) and appends its entry to `described`. */
static int write_output(const Engine *engine, OrtValue *value, const char *name, const char *out_dir,
                        json_t *described) {
    const OrtApi *api = engine->api;
    OrtTensorTypeAndShapeInfo *info = NULL;
    ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    size_t rank = 0, count = 0;
    int64_t *dims = NULL;
    void *data = NULL;
    char *file = NULL, *path = NULL;
    int status = ort_ok(api, api->GetTensorTypeAndShape(value, &info), "output shape");
    if (status == 0) {
        status = ort_ok(api, api->GetTensorElementType(info, &type), "output type") ||
                         ort_ok(api, api->GetDimensionsCount(info, &rank), "output rank") ||
                         ort_ok(api, api->GetTensorShapeElementCount(info, &count), "output size")
                     ? -1
                     : 0;
    }
    if (status == 0 && (dims = calloc(rank > 0 ? rank : 1, sizeof *dims)) == NULL) {
        status = fail("out of memory");
    }
    if (status == 0) {
        status = ort_ok(api, api->GetDimensions(info, dims, rank), "output dims") ||
                         ort_ok(api, api->GetTensorMutableData(value, &data), "output data")
                     ? -1
                     : 0;
    }
    const Dtype *dtype = status == 0 ? dtype_by_onnx(type) : NULL;
    if (status == 0 && dtype == NULL) {
        status = fail("output '%s': this runner cannot write ONNX element type %d", name, (int)type);
    }
    if (status == 0) {
        size_t size = strlen(name) + sizeof ".bin";
        file = malloc(size);
        if (file != NULL) {
            snprintf(file, size, "%s.bin", name);
            path = join(out_dir, file);
        }
        if (path == NULL) {
            status = fail("out of memory");
        }
    }
    if (status == 0) {
        swap_elements(data, count * dtype->size, dtype->size);
        status = write_file(path, data, count * dtype->size);
    }
    if (status == 0) {
        json_t *shape = json_array();
        for (size_t i = 0; i < rank; i++) {
            json_array_append_new(shape, json_integer(dims[i]));
        }
        json_array_append_new(described, json_pack("{s:s, s:s, s:s, s:o}", "name", name, "path", file, "dtype",
                                                   dtype->name, "shape", shape));
    }
    if (info != NULL) {
        api->ReleaseTensorTypeAndShapeInfo(info);
    }
    free(dims);
    free(file);
    free(path);
    return status;
}

/* ---- the run -------------------------------------------------------------------------------------------- */

typedef struct {
    int64_t batch;
    int iterations;
    double median_ms;
} Timing;

/* Runs the checked golden inputs through `model` and writes OUT_DIR; returns result.json's path (caller frees). */
static char *run_model(const char *model, const json_t *artifact, Golden *golden, size_t count, const char *out_dir) {
    Engine engine = {0};
    OrtValue **feed = NULL, **outputs = NULL;
    json_t *described = NULL, *result = NULL;
    char *result_path = NULL, *text_out = NULL;
    Timing plan[2] = {{1, 20, 0}, {0, 5, 0}};
    size_t steps = 1;
    int status = load_library(&engine);
    if (status == 0) {
        status = open_session(&engine, model, golden, count);
    }
    if (status == 0 && count == 0) {
        status = fail("the manifest's golden data has no inputs to run");
    }
    if (status == 0) {
        feed = calloc(engine.input_count + 1, sizeof *feed);
        outputs = calloc(engine.output_count + 1, sizeof *outputs);
        status = feed != NULL && outputs != NULL ? 0 : fail("out of memory");
    }
    /* The outputs written are those of the golden inputs at their full batch size. */
    int64_t total = count > 0 && golden[0].rank > 0 ? golden[0].dims[0] : 1;
    if (status == 0) {
        status = make_feed(&engine, golden, total, feed);
    }
    if (status == 0) {
        status = run_once(&engine, feed, outputs);
    }
    if (total != 1) {
        plan[1].batch = total;
        steps = 2;
    }
    for (size_t i = 0; status == 0 && i < steps; i++) {
        status = time_batch(&engine, golden, plan[i].batch, plan[i].iterations, &plan[i].median_ms);
    }
    if (status == 0) {
        status = make_dirs(out_dir);
    }
    if (status == 0) {
        described = json_array();
        for (size_t i = 0; status == 0 && i < engine.output_count; i++) {
            status = write_output(&engine, outputs[i], engine.output_names[i], out_dir, described);
        }
    }
    if (status == 0) {
        json_t *latency = json_array();
        for (size_t i = 0; i < steps; i++) {
            json_array_append_new(latency, json_pack("{s:I, s:f, s:i}", "batch", (json_int_t)plan[i].batch,
                                                     "median_ms", plan[i].median_ms, "iterations", plan[i].iterations));
        }
        result = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O, s:o}", "runtime", "onnxruntime-c", "version",
                           engine.version, "device", "cpu", "artifact", text(artifact, "path"), "precision",
                           precision_of(artifact), "outputs", described, "latency", latency);
        char *encoded = result != NULL ? json_dumps(result, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) : NULL;
        size_t length = encoded != NULL ? strlen(encoded) : 0;
        text_out = encoded != NULL ? malloc(length + 2) : NULL;
        if (text_out != NULL) { /* json_dumps ends without a newline; the file gets one */
            memcpy(text_out, encoded, length);
            memcpy(text_out + length, "\n", 2);
        }
        free(encoded);
        result_path = join(out_dir, "result.json");
        if (text_out == NULL || result_path == NULL) {
            status = fail("cannot encode result.json");
        }
    }
    /* result.json is written last: a run that fails part-way leaves none behind. */
    if (status == 0) {
        status = write_file(result_path, text_out, strlen(text_out));
    }
    if (engine.api != NULL) {
        release_values(engine.api, feed, engine.input_count);
        release_values(engine.api, outputs, engine.output_count);
    }
    free(feed);
    free(outputs);
    json_decref(described);
    json_decref(result);
    free(text_out);
    close_engine(&engine);
    if (status != 0) {
        free(result_path);
        return NULL;
    }
    return result_path;
}

/* Every check first (so that a refused bundle never loads ONNX Runtime), then the model. */
static char *run_bundle(const char *bundle, const char *out_dir, const char *wanted) {
    char *manifest_path = join(bundle, "manifest.json");
    json_t *manifest = NULL;
    Golden *golden = NULL;
    size_t count = 0;
    char *model = NULL, *result = NULL;
    if (manifest_path == NULL) {
        fail("out of memory");
        return NULL;
    }
    if (!is_regular_file(manifest_path)) {
        refuse("%s is not a bundle: manifest.json not found", bundle);
    } else {
        json_error_t error;
        manifest = json_load_file(manifest_path, 0, &error);
        if (manifest == NULL) {
            fail("manifest.json: %s (line %d)", error.text, error.line);
        } else if (!json_is_object(manifest)) {
            fail("manifest.json is not a JSON object");
        }
    }
    const json_t *artifact = error_code == 0 ? pick_artifact(manifest, wanted) : NULL;
    if (artifact != NULL) {
        model = checked_file(bundle, text(artifact, "path"), text(artifact, "sha256"), NULL, NULL);
    }
    if (model != NULL && load_golden(bundle, manifest, &golden, &count) == 0 &&
        check_inputs(json_object_get(manifest, "inputs"), golden, count) == 0) {
        result = run_model(model, artifact, golden, count, out_dir);
    }
    free_golden(golden, count);
    free(model);
    json_decref(manifest);
    free(manifest_path);
    return result;
}

int main(int argc, char **argv) {
    /* BUNDLE OUT_DIR with one optional "--artifact PATH" anywhere. */
    const char *positional[2] = {NULL, NULL};
    const char *wanted = NULL;
    int seen = 0, ok = 1;
    for (int i = 1; i < argc && ok; i++) {
        if (strcmp(argv[i], "--artifact") == 0) {
            ok = i + 1 < argc && wanted == NULL;
            wanted = ok ? argv[++i] : NULL;
        } else if (seen < 2) {
            positional[seen++] = argv[i];
        } else {
            ok = 0;
        }
    }
    if (!ok || seen != 2) {
        fputs(USAGE "\n", stderr);
        return 2;
    }
    char *result = run_bundle(positional[0], positional[1], wanted);
    if (result == NULL) {
        if (error_code == 0) {
            fail("the run failed for an unknown reason");
        }
        print_error();
        return error_code;
    }
    printf("%s\n", result);
    free(result);
    return 0;
}
