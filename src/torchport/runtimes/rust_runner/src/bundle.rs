//! The bundle side: manifest.json, safe paths, SHA-256 checks and the golden-vs-declared input checks.
//! Every problem found here is a refusal (exit 2), worded exactly as the runner contract says.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{refuse, Failure, Outcome};

pub struct Bundle {
    root: PathBuf,
    manifest: Value,
}

/// The artifact chosen to run, as the manifest describes it.
pub struct Artifact {
    pub path: String,
    pub precision: String,
    pub entry: Value,
}

/// One golden input file, read and checksummed.
pub struct GoldenTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
    pub bytes: Vec<u8>,
}

/// A declared dimension: a fixed size or a symbolic one ("batch") that matches any size >= 1.
enum Dim {
    Fixed(i64),
    Symbolic(String),
}

/// Bytes per element for the dtypes this runner can feed; None means "not supported".
pub fn itemsize(dtype: &str) -> Option<usize> {
    match dtype {
        "float32" | "int32" => Some(4),
        "int64" => Some(8),
        "uint8" => Some(1),
        _ => None,
    }
}

fn field<'a>(value: &'a Value, key: &str) -> Outcome<&'a Value> {
    match value.get(key) {
        Some(v) => Ok(v),
        None => refuse(format!("manifest.json: missing field '{key}'")),
    }
}

fn text<'a>(value: &'a Value, key: &str) -> Outcome<&'a str> {
    match field(value, key)?.as_str() {
        Some(s) => Ok(s),
        None => refuse(format!("manifest.json: field '{key}' is not a string")),
    }
}

fn list<'a>(value: &'a Value, key: &str) -> Outcome<&'a Vec<Value>> {
    match field(value, key)?.as_array() {
        Some(a) => Ok(a),
        None => refuse(format!("manifest.json: field '{key}' is not a list")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Formats a shape the way the refusal messages print it: `[batch, 1, 8, 8]`.
fn format_shape<T: std::fmt::Display>(dims: &[T]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(name) => f.write_str(name),
        }
    }
}

impl Bundle {
    pub fn open(root: &Path) -> Outcome<Bundle> {
        let manifest_path = root.join("manifest.json");
        if !manifest_path.is_file() {
            return refuse(format!("{} is not a bundle: manifest.json not found", root.display()));
        }
        let raw = std::fs::read(&manifest_path)
            .map_err(|e| Failure::Refusal(format!("cannot read {}: {e}", manifest_path.display())))?;
        let manifest: Value = serde_json::from_slice(&raw)
            .map_err(|e| Failure::Refusal(format!("manifest.json is not valid JSON: {e}")))?;
        Ok(Bundle {
            root: root.to_path_buf(),
            manifest,
        })
    }

    /// `--artifact PATH` picks by manifest path; by default the first ONNX fp32 artifact (no precision = fp32).
    pub fn select_artifact(&self, wanted: Option<&str>) -> Outcome<Artifact> {
        let precision_of = |a: &Value| a.get("precision").and_then(Value::as_str).unwrap_or("fp32").to_string();
        let kind_of = |a: &Value| a.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
        let artifacts = list(&self.manifest, "artifacts")?;
        let chosen = match wanted {
            Some(path) => artifacts
                .iter()
                .find(|a| a.get("path").and_then(Value::as_str) == Some(path)),
            None => artifacts
                .iter()
                .find(|a| kind_of(a) == "onnx" && precision_of(a) == "fp32"),
        };
        let Some(entry) = chosen else {
            return match wanted {
                Some(path) => refuse(format!("the manifest lists no ONNX artifact '{path}'; refusing it")),
                None => refuse("the manifest lists no ONNX artifact (kind \"onnx\", precision fp32) to run"),
            };
        };
        let path = text(entry, "path")?.to_string();
        if kind_of(entry) != "onnx" {
            return refuse(format!(
                "artifact '{path}' is of kind '{}', not 'onnx'; this runner runs only ONNX artifacts",
                kind_of(entry)
            ));
        }
        Ok(Artifact {
            path,
            precision: precision_of(entry),
            entry: entry.clone(),
        })
    }

    /// Resolves a manifest path inside the bundle, refusing anything that could point outside it.
    fn safe_path(&self, relative: &str) -> Outcome<PathBuf> {
        let unsafe_path = relative.is_empty()
            || relative.starts_with('/')
            || relative.contains('\\')
            || Path::new(relative).is_absolute()
            || relative.split('/').any(|part| part == "..");
        if unsafe_path {
            return refuse(format!(
                "bundle path '{relative}' is absolute or contains '..'; refusing it"
            ));
        }
        Ok(self.root.join(relative))
    }

    /// Reads the file a manifest entry names and verifies its SHA-256 (lowercase hex of the whole file).
    /// Returns the file's path and its bytes.
    pub fn checked_file(&self, entry: &Value) -> Outcome<(PathBuf, Vec<u8>)> {
        let relative = text(entry, "path")?;
        let path = self.safe_path(relative)?;
        if !path.is_file() {
            return refuse(format!("bundle file '{relative}' is missing"));
        }
        let bytes = std::fs::read(&path)
            .map_err(|e| Failure::Refusal(format!("bundle file '{relative}' cannot be read: {e}")))?;
        let expected = text(entry, "sha256")?.to_ascii_lowercase();
        let actual = hex(&Sha256::digest(&bytes));
        if actual != expected {
            let head: String = expected.chars().take(12).collect();
            return refuse(format!(
                "bundle file '{relative}' fails its checksum: SHA-256 {}... != manifest {head}...; refusing it",
                &actual[..12]
            ));
        }
        Ok((path, bytes))
    }

    /// Reads and checksums every golden input file (shape and dtype are checked later, in `check_inputs`).
    pub fn golden_inputs(&self) -> Outcome<Vec<GoldenTensor>> {
        let golden = field(&self.manifest, "golden")?;
        let mut tensors = Vec::new();
        for entry in list(golden, "inputs")? {
            let (_, bytes) = self.checked_file(entry)?;
            let mut shape = Vec::new();
            for d in list(entry, "shape")? {
                match d.as_i64() {
                    Some(n) if n >= 0 => shape.push(n),
                    _ => return refuse(format!("manifest.json: golden input shape has a bad dimension {d}")),
                }
            }
            tensors.push(GoldenTensor {
                name: text(entry, "name")?.to_string(),
                dtype: text(entry, "dtype")?.to_string(),
                shape,
                bytes,
            });
        }
        Ok(tensors)
    }

    /// The golden tensors are what will be fed: they must match the model's declared inputs one for one.
    pub fn check_inputs(&self, golden: &[GoldenTensor]) -> Outcome<()> {
        let declared = list(&self.manifest, "inputs")?;
        let mut declared_names = Vec::new();
        for input in declared {
            let name = text(input, "name")?;
            if !golden.iter().any(|g| g.name == name) {
                return refuse(format!(
                    "input '{name}': the manifest declares it but golden/ has no tensor of that name; refusing it"
                ));
            }
            declared_names.push(name);
        }
        for tensor in golden {
            let Some(index) = declared_names.iter().position(|n| *n == tensor.name) else {
                return refuse(format!(
                    "golden input '{}' is not among the manifest's inputs; refusing it",
                    tensor.name
                ));
            };
            let input = &declared[index];
            let name = &tensor.name;

            let dtype = text(input, "dtype")?;
            if dtype != tensor.dtype {
                return refuse(format!(
                    "input '{name}': the manifest declares dtype {dtype}, the golden tensor is {}; refusing it",
                    tensor.dtype
                ));
            }

            let mut dims = Vec::new();
            for d in list(input, "shape")? {
                match (d.as_i64(), d.as_str()) {
                    (Some(n), _) => dims.push(Dim::Fixed(n)),
                    (None, Some(s)) => dims.push(Dim::Symbolic(s.to_string())),
                    _ => return refuse(format!("manifest.json: input '{name}' has a bad dimension {d}")),
                }
            }
            let matches = dims.len() == tensor.shape.len()
                && dims.iter().zip(&tensor.shape).all(|(d, &g)| match d {
                    Dim::Fixed(n) => *n == g,
                    Dim::Symbolic(_) => g >= 1,
                });
            if !matches {
                return refuse(format!(
                    "input '{name}': the manifest declares shape {}, the golden tensor is {}; refusing it",
                    format_shape(&dims),
                    format_shape(&tensor.shape)
                ));
            }

            let Some(size) = itemsize(&tensor.dtype) else {
                return refuse(format!("dtype {} is not supported by this runner", tensor.dtype));
            };
            let need = tensor.shape.iter().product::<i64>() as usize * size;
            if tensor.bytes.len() != need {
                return refuse(format!(
                    "golden input '{name}' holds {} bytes, its shape {} and dtype {} need {need}; refusing it",
                    tensor.bytes.len(),
                    format_shape(&tensor.shape),
                    tensor.dtype
                ));
            }
        }
        Ok(())
    }
}
