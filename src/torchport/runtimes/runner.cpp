// torchport C++ runner: run a bundle's golden inputs through model.pt2 with LibTorch's AOTIModelPackageLoader.
// Usage: runner BUNDLE OUT_DIR [--artifact model.pt2]
// Reads only manifest.json and the files it names; refuses absolute or '..' paths and bad SHA-256s (exit 2);
// writes result.json and one raw little-endian <output>.bin per output into OUT_DIR. No Python needed.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace fs = std::filesystem;

#ifndef TORCHPORT_TORCH_VERSION
#define TORCHPORT_TORCH_VERSION "unknown"
#endif

struct Refusal : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// --- a minimal JSON reader: enough for manifest.json ---------------------------------------------------------
struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool boolean = false;
  double number = 0;
  std::string text;
  std::vector<Json> items;
  std::map<std::string, Json> fields;
  const Json& operator[](const std::string& key) const {
    auto it = fields.find(key);
    if (it == fields.end()) throw Refusal("manifest.json: missing field '" + key + "'");
    return it->second;
  }
  bool has(const std::string& key) const { return fields.count(key) > 0; }
};

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}
  Json parse() {
    Json value = parse_value();
    skip();
    if (i_ != s_.size()) fail("trailing characters");
    return value;
  }

 private:
  const std::string& s_;
  size_t i_ = 0;
  [[noreturn]] void fail(const std::string& what) {
    throw Refusal("manifest.json: invalid JSON at byte " + std::to_string(i_) + ": " + what);
  }
  void skip() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  char peek() {
    skip();
    if (i_ >= s_.size()) fail("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string parse_string() {
    expect('"');
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c == '\\') {
        char e = s_[i_++];
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'u': {
            unsigned code = std::stoul(s_.substr(i_, 4), nullptr, 16);
            i_ += 4;
            if (code < 0x80) {
              out += static_cast<char>(code);
            } else if (code < 0x800) {
              out += static_cast<char>(0xC0 | (code >> 6));
              out += static_cast<char>(0x80 | (code & 0x3F));
            } else {
              out += static_cast<char>(0xE0 | (code >> 12));
              out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
              out += static_cast<char>(0x80 | (code & 0x3F));
            }
            break;
          }
          default: out += e;
        }
      } else {
        out += c;
      }
    }
    if (i_ >= s_.size()) fail("unterminated string");
    ++i_;
    return out;
  }
  Json parse_value() {
    Json v;
    char c = peek();
    if (c == '{') {
      v.kind = Json::Object;
      ++i_;
      if (peek() == '}') { ++i_; return v; }
      while (true) {
        std::string key = parse_string();
        expect(':');
        v.fields[key] = parse_value();
        if (peek() == ',') { ++i_; continue; }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = Json::Array;
      ++i_;
      if (peek() == ']') { ++i_; return v; }
      while (true) {
        v.items.push_back(parse_value());
        if (peek() == ',') { ++i_; continue; }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = Json::String;
      v.text = parse_string();
      return v;
    }
    if (s_.compare(i_, 4, "true") == 0) { v.kind = Json::Bool; v.boolean = true; i_ += 4; return v; }
    if (s_.compare(i_, 5, "false") == 0) { v.kind = Json::Bool; i_ += 5; return v; }
    if (s_.compare(i_, 4, "null") == 0) { i_ += 4; return v; }
    size_t used = 0;
    v.kind = Json::Number;
    try {
      v.number = std::stod(s_.substr(i_, 64), &used);
    } catch (const std::exception&) {
      fail("unexpected character");
    }
    i_ += used;
    return v;
  }
};

// --- SHA-256 (FIPS 180-4) ------------------------------------------------------------------------------------
std::string sha256_hex(const std::string& data) {
  static const uint32_t k[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
      0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
      0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
      0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
      0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
      0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
      0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
      0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  std::string msg = data;
  uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
  msg += static_cast<char>(0x80);
  while (msg.size() % 64 != 56) msg += static_cast<char>(0);
  for (int i = 7; i >= 0; --i) msg += static_cast<char>((bits >> (i * 8)) & 0xff);
  for (size_t chunk = 0; chunk < msg.size(); chunk += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      const auto* p = reinterpret_cast<const unsigned char*>(msg.data() + chunk + 4 * i);
      w[i] = (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
    }
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }
  std::ostringstream out;
  for (uint32_t v : h) out << std::hex << std::setw(8) << std::setfill('0') << v;
  return out.str();
}

// --- the bundle ----------------------------------------------------------------------------------------------
std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Refusal("cannot read " + path.string());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

fs::path safe_path(const fs::path& root, const std::string& relative) {
  fs::path rel(relative);
  if (relative.empty() || rel.is_absolute() || relative.find('\\') != std::string::npos)
    throw Refusal("bundle path '" + relative + "' is absolute or contains '..'; refusing it");
  for (const auto& part : rel)
    if (part == "..") throw Refusal("bundle path '" + relative + "' is absolute or contains '..'; refusing it");
  return root / rel;
}

std::string checked_file(const fs::path& root, const Json& entry) {
  const std::string& relative = entry["path"].text;
  fs::path path = safe_path(root, relative);
  if (!fs::is_regular_file(path)) throw Refusal("bundle file '" + relative + "' is missing");
  std::string bytes = read_file(path);
  std::string digest = sha256_hex(bytes);
  if (digest != entry["sha256"].text)
    throw Refusal("bundle file '" + relative + "' fails its checksum: SHA-256 " + digest.substr(0, 12) +
                  "... != manifest " + entry["sha256"].text.substr(0, 12) + "...; refusing it");
  return bytes;
}

at::ScalarType scalar_type(const std::string& dtype) {
  static const std::map<std::string, at::ScalarType> types = {{"float32", at::kFloat}, {"float16", at::kHalf},
                                                               {"int64", at::kLong},    {"int32", at::kInt},
                                                               {"uint8", at::kByte}};
  auto it = types.find(dtype);
  if (it == types.end()) throw Refusal("dtype " + dtype + " is not supported by this runner");
  return it->second;
}

std::string dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "float32";
    case at::kHalf: return "float16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kByte: return "uint8";
    default: throw std::runtime_error("output dtype not supported");
  }
}

std::string shape_text(const Json& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.items.size(); ++i) {
    const Json& d = shape.items[i];
    text += (i ? ", " : "") + (d.kind == Json::String ? d.text : std::to_string(static_cast<int64_t>(d.number)));
  }
  return text + "]";
}

// Refuse golden inputs that do not match the inputs the manifest declares (name, dtype, shape; "batch" matches any
// first dimension) before anything runs: a mismatch would otherwise surface as a cryptic error or misread bytes.
void check_inputs(const Json& manifest) {
  std::map<std::string, const Json*> declared, golden;
  for (const Json& spec : manifest["inputs"].items) declared[spec["name"].text] = &spec;
  for (const Json& entry : manifest["golden"]["inputs"].items) golden[entry["name"].text] = &entry;
  for (const auto& [name, spec] : declared)
    if (!golden.count(name))
      throw Refusal("input '" + name + "': the manifest declares it but golden/ has no tensor of that name; refusing it");
  for (const auto& [name, entry] : golden) {
    auto found = declared.find(name);
    if (found == declared.end()) throw Refusal("golden input '" + name + "' is not among the manifest's inputs; refusing it");
    const Json& spec = *found->second;
    if (spec["dtype"].text != (*entry)["dtype"].text)
      throw Refusal("input '" + name + "': the manifest declares dtype " + spec["dtype"].text +
                    ", the golden tensor is " + (*entry)["dtype"].text + "; refusing it");
    const auto& want = spec["shape"].items;
    const auto& got = (*entry)["shape"].items;
    bool fits = want.size() == got.size();
    for (size_t i = 0; fits && i < want.size(); ++i)
      fits = want[i].kind == Json::String ? want[i].text == "batch" : want[i].number == got[i].number;
    if (!fits)
      throw Refusal("input '" + name + "': the manifest declares shape " + shape_text(spec["shape"]) +
                    ", the golden tensor is " + shape_text((*entry)["shape"]) + "; refusing it");
  }
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string wanted;
  auto at_flag = std::find(args.begin(), args.end(), "--artifact");
  if (at_flag != args.end() && at_flag + 1 != args.end()) {
    wanted = *(at_flag + 1);
    args.erase(at_flag, at_flag + 2);
  }
  if (args.size() != 2) {
    std::cerr << "usage: runner BUNDLE OUT_DIR [--artifact model.pt2]\n";
    return 2;
  }
  fs::path root(args[0]), out_dir(args[1]);
  if (!fs::is_regular_file(root / "manifest.json"))
    throw Refusal(root.string() + " is not a bundle: manifest.json not found");
  Json manifest = Parser(read_file(root / "manifest.json")).parse();
  const Json* artifact = nullptr;
  for (const Json& a : manifest["artifacts"].items) {
    std::string precision = a.has("precision") ? a["precision"].text : "fp32";
    if (wanted.empty() ? (a["kind"].text == "aoti" && precision == "fp32") : a["path"].text == wanted) {
      artifact = &a;
      break;
    }
  }
  if (artifact == nullptr || (*artifact)["kind"].text != "aoti")
    throw Refusal("the manifest lists no AOTInductor (.pt2) artifact " + wanted);
  checked_file(root, *artifact);  // the loader reads the file itself; the checksum is verified first
  fs::path package = safe_path(root, (*artifact)["path"].text);

  std::vector<std::string> golden;
  for (const Json& entry : manifest["golden"]["inputs"].items) golden.push_back(checked_file(root, entry));
  check_inputs(manifest);
  std::vector<at::Tensor> inputs;
  for (size_t g = 0; g < golden.size(); ++g) {
    const Json& entry = manifest["golden"]["inputs"].items[g];
    const std::string& bytes = golden[g];
    std::vector<int64_t> shape;
    for (const Json& d : entry["shape"].items) shape.push_back(static_cast<int64_t>(d.number));
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(scalar_type(entry["dtype"].text)));
    if (static_cast<size_t>(t.nbytes()) != bytes.size())
      throw Refusal("golden input '" + entry["name"].text + "' holds " + std::to_string(bytes.size()) +
                    " bytes, its shape " + shape_text(entry["shape"]) + " and dtype " + entry["dtype"].text +
                    " need " + std::to_string(t.nbytes()) + "; refusing it");
    std::memcpy(t.data_ptr(), bytes.data(), bytes.size());  // little-endian hosts only (x86-64, arm64)
    inputs.push_back(t);
  }

  c10::NoGradGuard no_grad;
  at::set_num_threads(1);
  torch::inductor::AOTIModelPackageLoader loader(package.string());
  std::vector<at::Tensor> outputs = loader.run(inputs);

  int64_t total = inputs.at(0).size(0);
  std::vector<std::array<int64_t, 2>> plan = {{1, 20}};
  if (total != 1) plan.push_back({total, 5});
  std::ostringstream latency;
  for (size_t p = 0; p < plan.size(); ++p) {
    std::vector<at::Tensor> feed;
    for (const auto& t : inputs) feed.push_back(t.slice(0, 0, plan[p][0]).contiguous());
    loader.run(feed);
    std::vector<double> times;
    for (int64_t i = 0; i < plan[p][1]; ++i) {
      auto start = std::chrono::steady_clock::now();
      loader.run(feed);
      times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    latency << (p ? ", " : "") << "{\"batch\": " << plan[p][0] << ", \"median_ms\": " << std::setprecision(9)
            << median(times) << ", \"iterations\": " << plan[p][1] << "}";
  }

  std::vector<std::string> names;
  for (const Json& o : manifest["outputs"].items) names.push_back(o["name"].text);
  if (names.size() != outputs.size()) throw std::runtime_error("the model returned an unexpected number of outputs");
  fs::create_directories(out_dir);
  std::ostringstream described;
  for (size_t i = 0; i < outputs.size(); ++i) {
    at::Tensor t = outputs[i].contiguous().cpu();
    std::ofstream(out_dir / (names[i] + ".bin"), std::ios::binary)
        .write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    described << (i ? ", " : "") << "{\"name\": \"" << names[i] << "\", \"path\": \"" << names[i]
              << ".bin\", \"dtype\": \"" << dtype_name(t.scalar_type()) << "\", \"shape\": [";
    for (int64_t d = 0; d < t.dim(); ++d) described << (d ? ", " : "") << t.size(d);
    described << "]}";
  }
  std::string precision = artifact->has("precision") ? (*artifact)["precision"].text : "fp32";
  std::ofstream(out_dir / "result.json") << "{\n  \"runtime\": \"libtorch-aoti\",\n  \"version\": \"" << TORCHPORT_TORCH_VERSION
                                         << "\",\n  \"device\": \"cpu\",\n  \"artifact\": \"" << (*artifact)["path"].text
                                         << "\",\n  \"precision\": \"" << precision << "\",\n  \"outputs\": ["
                                         << described.str() << "],\n  \"latency\": [" << latency.str() << "]\n}\n";
  std::cout << (out_dir / "result.json").string() << "\n";
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const Refusal& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
