//! The ONNX Runtime side: load the library named by ORT_DYLIB_PATH, build a single-threaded CPU session, feed
//! golden tensors, time runs and read outputs back as raw little-endian bytes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ort::logging::LogLevel;
use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType};

use crate::bundle::GoldenTensor;
use crate::{fail, refuse, Failure, Outcome};

pub struct Engine {
    session: Session,
    /// The ONNX Runtime library's own version string, e.g. "1.31.1".
    pub version: String,
}

/// One model output, ready to be written as OUT_DIR/<name>.bin.
pub struct Output {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<i64>,
    pub bytes: Vec<u8>,
}

/// The library path, checked here so a missing library is one clear line rather than a dlopen error.
fn dylib_path() -> Outcome<PathBuf> {
    const HINT: &str = "set ORT_DYLIB_PATH to the ONNX Runtime shared library (libonnxruntime.so)";
    let raw = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty());
    let Some(raw) = raw else {
        return refuse(format!("{HINT}; it is not set"));
    };
    let path = PathBuf::from(&raw);
    if !path.is_file() {
        return refuse(format!("{HINT}; '{}' does not exist", path.display()));
    }
    // ort resolves relative paths against the executable's folder first; an absolute path avoids surprises.
    std::fs::canonicalize(&path).map_err(fail("cannot resolve ORT_DYLIB_PATH"))
}

/// Asks the loaded library for its version (OrtApiBase::GetVersionString); ort has no public accessor for it.
/// dlopen of an already-loaded path returns the same handle, so this does not load a second copy.
fn library_version(path: &Path) -> Outcome<String> {
    // SAFETY: the library was already loaded (and its version accepted) by ort::init_from; OrtGetApiBase takes no
    // arguments and returns a pointer to a static struct whose GetVersionString returns a static C string.
    unsafe {
        let lib = libloading::Library::new(path).map_err(fail("cannot open ONNX Runtime"))?;
        let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> = lib
            .get(b"OrtGetApiBase")
            .map_err(fail("ONNX Runtime has no OrtGetApiBase"))?;
        let base = get_base();
        if base.is_null() {
            return Err(Failure::Error("OrtGetApiBase returned null".into()));
        }
        let version = std::ffi::CStr::from_ptr(((*base).GetVersionString)());
        Ok(version.to_string_lossy().into_owned())
    }
}

/// Decodes raw little-endian bytes into a typed tensor of the given shape.
fn tensor(dtype: &str, shape: Vec<i64>, bytes: &[u8]) -> Outcome<DynValue> {
    macro_rules! typed {
        ($t:ty) => {{
            let data: Vec<$t> = bytes
                .chunks_exact(std::mem::size_of::<$t>())
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk has the element size")))
                .collect();
            Tensor::from_array((shape, data))
                .map_err(fail("cannot create input tensor"))?
                .into_dyn()
        }};
    }
    Ok(match dtype {
        "float32" => typed!(f32),
        "int64" => typed!(i64),
        "int32" => typed!(i32),
        "uint8" => typed!(u8),
        other => return refuse(format!("dtype {other} is not supported by this runner")),
    })
}

/// The first `batch` rows of every golden tensor (all of a rank-0 tensor), as named input values.
fn feed(golden: &[GoldenTensor], batch: Option<i64>) -> Outcome<Vec<(String, DynValue)>> {
    let mut values = Vec::new();
    for g in golden {
        let (shape, bytes) = match (batch, g.shape.first()) {
            (Some(b), Some(&rows)) if rows > 0 && b < rows => {
                let row_bytes = g.bytes.len() / rows as usize;
                let mut shape = g.shape.clone();
                shape[0] = b;
                (shape, &g.bytes[..b as usize * row_bytes])
            }
            _ => (g.shape.clone(), &g.bytes[..]),
        };
        values.push((g.name.clone(), tensor(&g.dtype, shape, bytes)?));
    }
    Ok(values)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

impl Engine {
    pub fn new(model: &Path) -> Outcome<Engine> {
        let lib = dylib_path()?;
        let env = ort::init_from(&lib)
            .map_err(fail("cannot load ONNX Runtime"))?
            .with_name("torchport")
            .with_telemetry(false)
            .build()
            .map_err(fail("cannot create the ONNX Runtime environment"))?;
        // Errors only: warnings (e.g. about node placement) would be chatter on stderr for a successful run.
        env.set_log_level(LogLevel::Error);
        let version = library_version(&lib)?;
        // Single-threaded so latencies compare across runners; the default execution provider is the CPU.
        let configure = "cannot configure the session";
        let session = Session::builder(&env)
            .map_err(fail("cannot create session options"))?
            .with_log_level(LogLevel::Error)
            .map_err(fail(configure))?
            .with_intra_threads(1)
            .map_err(fail(configure))?
            .with_inter_threads(1)
            .map_err(fail(configure))?
            // From the file (checksum already verified) so ONNX external-data files next to it still resolve.
            .commit_from_file(model)
            .map_err(fail("cannot load the model"))?;
        Ok(Engine { session, version })
    }

    fn run_once(&mut self, values: &[(String, DynValue)]) -> Outcome<ort::session::SessionOutputs<'_>> {
        let inputs: Vec<(&str, &DynValue)> = values.iter().map(|(n, v)| (n.as_str(), v)).collect();
        self.session.run(inputs).map_err(fail("inference failed"))
    }

    /// Runs the golden inputs at full batch and returns the outputs in the session's order.
    pub fn run_full(&mut self, golden: &[GoldenTensor]) -> Outcome<Vec<Output>> {
        let names: Vec<String> = self.session.outputs().iter().map(|o| o.name().to_string()).collect();
        let values = feed(golden, None)?;
        let results = self.run_once(&values)?;
        let mut outputs = Vec::new();
        for name in names {
            let value = results
                .get(&name)
                .ok_or_else(|| Failure::Error(format!("the session returned no output '{name}'")))?;
            outputs.push(read_output(name, value)?);
        }
        Ok(outputs)
    }

    /// One warm-up run, then the median of `iterations` timed runs, in milliseconds.
    pub fn median_latency_ms(&mut self, golden: &[GoldenTensor], batch: i64, iterations: usize) -> Outcome<f64> {
        let values = feed(golden, Some(batch))?;
        self.run_once(&values)?;
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let start = Instant::now();
            let outputs = self.run_once(&values)?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            drop(outputs);
        }
        // Nanosecond resolution is all a wall clock gives; rounding keeps result.json free of float noise.
        Ok((median(times) * 1e6).round() / 1e6)
    }
}

/// Copies a CPU output tensor out as raw little-endian bytes, with its dtype name as torchport spells it.
fn read_output(name: String, value: &DynValue) -> Outcome<Output> {
    macro_rules! extract {
        ($t:ty, $dtype:literal, $to_bytes:expr) => {{
            let (shape, data) = value
                .try_extract_tensor::<$t>()
                .map_err(fail(&format!("output '{name}'")))?;
            Output {
                dtype: $dtype,
                shape: shape.to_vec(),
                bytes: data.iter().flat_map($to_bytes).collect(),
                name,
            }
        }};
    }
    Ok(match value.dtype().tensor_type() {
        Some(TensorElementType::Float32) => extract!(f32, "float32", |x: &f32| x.to_le_bytes()),
        Some(TensorElementType::Float64) => extract!(f64, "float64", |x: &f64| x.to_le_bytes()),
        Some(TensorElementType::Int64) => extract!(i64, "int64", |x: &i64| x.to_le_bytes()),
        Some(TensorElementType::Int32) => extract!(i32, "int32", |x: &i32| x.to_le_bytes()),
        Some(TensorElementType::Int8) => extract!(i8, "int8", |x: &i8| x.to_le_bytes()),
        Some(TensorElementType::Uint8) => extract!(u8, "uint8", |x: &u8| [*x]),
        Some(TensorElementType::Bool) => extract!(bool, "bool", |x: &bool| [*x as u8]),
        other => {
            return Err(Failure::Error(format!(
                "output '{name}' has element type {other:?}, which this runner cannot write"
            )))
        }
    })
}
