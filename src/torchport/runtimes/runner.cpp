// torchport C++ runner: run a bundle's golden inputs through model.pt2 with LibTorch's AOTIModelPackageLoader.
// Usage: runner BUNDLE OUT_DIR [--artifact model.pt2]
// Reads only manifest.json and the files it names; refuses absolute or '..' paths and bad SHA-256s (exit 2);
// writes result.json and one raw little-endian <output>.bin per output into OUT_DIR. No Python needed.
// Besides LibTorch it needs nlohmann/json (JSON) and OpenSSL's libcrypto (SHA-256):
// apt-get install nlohmann-json3-dev libssl-dev
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;  // ordered: result.json keeps its fields in the order they are written

#ifndef TORCHPORT_TORCH_VERSION
#define TORCHPORT_TORCH_VERSION "unknown"
#endif

struct Refusal : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// --- manifest fields: a missing one is refused here; a mistyped one throws nlohmann's type_error, which main()
// refuses too ------------------------------------------------------------------------------------------------
const Json& field(const Json& object, const std::string& key) {
  auto it = object.find(key);
  if (it == object.end()) throw Refusal("manifest.json: missing field '" + key + "'");
  return *it;
}

std::string text(const Json& object, const std::string& key) { return field(object, key).get<std::string>(); }

const Json::array_t& items(const Json& object, const std::string& key) {
  return field(object, key).get_ref<const Json::array_t&>();
}

std::string sha256_hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("OpenSSL failed to compute a SHA-256");
  static const char hex_digits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < size; ++i) hex += {hex_digits[digest[i] >> 4], hex_digits[digest[i] & 0xf]};
  return hex;
}

// --- the bundle ----------------------------------------------------------------------------------------------
std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Refusal("cannot read " + path.string());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Json read_manifest(const fs::path& root) {
  if (!fs::is_regular_file(root / "manifest.json"))
    throw Refusal(root.string() + " is not a bundle: manifest.json not found");
  try {
    return Json::parse(read_file(root / "manifest.json"));
  } catch (const Json::parse_error& e) {
    throw Refusal(std::string("manifest.json: invalid JSON: ") + e.what());
  }
}

fs::path safe_path(const fs::path& root, const std::string& relative) {
  fs::path rel(relative);
  if (relative.empty() || rel.is_absolute() || relative.find('\\') != std::string::npos)
    throw Refusal("bundle path '" + relative + "' is absolute or contains '..'; refusing it");
  for (const auto& part : rel)
    if (part == "..") throw Refusal("bundle path '" + relative + "' is absolute or contains '..'; refusing it");
  return root / rel;
}

// An output name becomes OUT_DIR/<name>.bin: refuse one that is not a plain file name.
const std::string& check_output_name(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find_first_of(std::string("/\\\0", 3)) != std::string::npos)
    throw Refusal("output name '" + name + "' is not a plain file name; refusing it");
  return name;
}

std::string checked_file(const fs::path& root, const Json& entry) {
  const std::string relative = text(entry, "path");
  fs::path path = safe_path(root, relative);
  if (!fs::is_regular_file(path)) throw Refusal("bundle file '" + relative + "' is missing");
  std::string bytes = read_file(path);
  std::string digest = sha256_hex(bytes), expected = text(entry, "sha256");
  if (digest != expected)
    throw Refusal("bundle file '" + relative + "' fails its checksum: SHA-256 " + digest.substr(0, 12) +
                  "... != manifest " + expected.substr(0, 12) + "...; refusing it");
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

std::string shape_text(const Json::array_t& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    text += (i ? ", " : "") + (shape[i].is_string() ? shape[i].get<std::string>()
                                                    : std::to_string(shape[i].get<int64_t>()));
  return text + "]";
}

// Refuse golden inputs that do not match the inputs the manifest declares (name, dtype, shape; "batch" matches any
// first dimension) before anything runs: a mismatch would otherwise surface as a cryptic error or misread bytes.
void check_inputs(const Json& manifest) {
  std::map<std::string, const Json*> declared, golden;
  for (const Json& spec : items(manifest, "inputs")) declared[text(spec, "name")] = &spec;
  for (const Json& entry : items(field(manifest, "golden"), "inputs")) golden[text(entry, "name")] = &entry;
  for (const auto& [name, spec] : declared)
    if (!golden.count(name))
      throw Refusal("input '" + name + "': the manifest declares it but golden/ has no tensor of that name; refusing it");
  for (const auto& [name, entry] : golden) {
    auto found = declared.find(name);
    if (found == declared.end()) throw Refusal("golden input '" + name + "' is not among the manifest's inputs; refusing it");
    const Json& spec = *found->second;
    if (text(spec, "dtype") != text(*entry, "dtype"))
      throw Refusal("input '" + name + "': the manifest declares dtype " + text(spec, "dtype") +
                    ", the golden tensor is " + text(*entry, "dtype") + "; refusing it");
    const auto& want = items(spec, "shape");
    const auto& got = items(*entry, "shape");
    bool fits = want.size() == got.size();
    for (size_t i = 0; fits && i < want.size(); ++i)
      fits = want[i].is_string() ? want[i] == "batch" : want[i] == got[i];
    if (!fits)
      throw Refusal("input '" + name + "': the manifest declares shape " + shape_text(want) +
                    ", the golden tensor is " + shape_text(got) + "; refusing it");
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
  Json manifest = read_manifest(root);
  const Json* artifact = nullptr;
  for (const Json& a : items(manifest, "artifacts")) {
    bool chosen = wanted.empty() ? text(a, "kind") == "aoti" && a.value("precision", "fp32") == "fp32"
                                 : text(a, "path") == wanted;
    if (chosen) {
      artifact = &a;
      break;
    }
  }
  if (artifact == nullptr || text(*artifact, "kind") != "aoti")
    throw Refusal("the manifest lists no AOTInductor (.pt2) artifact " + wanted);
  checked_file(root, *artifact);  // the loader reads the file itself; the checksum is verified first
  fs::path package = safe_path(root, text(*artifact, "path"));

  const auto& golden_inputs = items(field(manifest, "golden"), "inputs");
  std::vector<std::string> golden;
  for (const Json& entry : golden_inputs) golden.push_back(checked_file(root, entry));
  check_inputs(manifest);
  std::vector<std::string> names;
  for (const Json& o : items(manifest, "outputs")) names.push_back(check_output_name(text(o, "name")));
  std::vector<at::Tensor> inputs;
  for (size_t g = 0; g < golden.size(); ++g) {
    const Json& entry = golden_inputs[g];
    const std::string& bytes = golden[g];
    std::vector<int64_t> shape;
    for (const Json& d : items(entry, "shape")) shape.push_back(d.get<int64_t>());
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(scalar_type(text(entry, "dtype"))));
    if (static_cast<size_t>(t.nbytes()) != bytes.size())
      throw Refusal("golden input '" + text(entry, "name") + "' holds " + std::to_string(bytes.size()) +
                    " bytes, its shape " + shape_text(items(entry, "shape")) + " and dtype " + text(entry, "dtype") +
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
  Json latency = Json::array();
  for (const auto& [batch, iterations] : plan) {
    std::vector<at::Tensor> feed;
    for (const auto& t : inputs) feed.push_back(t.slice(0, 0, batch).contiguous());
    loader.run(feed);
    std::vector<double> times;
    for (int64_t i = 0; i < iterations; ++i) {
      auto start = std::chrono::steady_clock::now();
      loader.run(feed);
      times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    latency.push_back({{"batch", batch}, {"median_ms", median(times)}, {"iterations", iterations}});
  }

  if (names.size() != outputs.size()) throw std::runtime_error("the model returned an unexpected number of outputs");
  fs::create_directories(out_dir);
  Json described = Json::array();
  for (size_t i = 0; i < outputs.size(); ++i) {
    at::Tensor t = outputs[i].contiguous().cpu();
    std::ofstream(out_dir / (names[i] + ".bin"), std::ios::binary)
        .write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    described.push_back({{"name", names[i]},
                         {"path", names[i] + ".bin"},
                         {"dtype", dtype_name(t.scalar_type())},
                         {"shape", t.sizes().vec()}});
  }
  Json result = {{"runtime", "libtorch-aoti"},
                 {"version", TORCHPORT_TORCH_VERSION},
                 {"device", "cpu"},
                 {"artifact", text(*artifact, "path")},
                 {"precision", artifact->value("precision", "fp32")},
                 {"outputs", described},
                 {"latency", latency}};
  std::ofstream(out_dir / "result.json") << result.dump(2) << "\n";
  std::cout << (out_dir / "result.json").string() << "\n";
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const Refusal& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const Json::exception& e) {  // a manifest field of the wrong type
    std::cerr << "error: manifest.json: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
