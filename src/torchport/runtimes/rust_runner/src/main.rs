//! torchport Rust runner: run a bundle's golden inputs through an ONNX artifact with ONNX Runtime (the `ort` crate).
//!
//! Usage: ORT_DYLIB_PATH=/path/to/libonnxruntime.so torchport-runner BUNDLE OUT_DIR [--artifact PATH]
//!
//! Reads only BUNDLE/manifest.json and the files it names. Refuses (one `error: ` line on stderr, exit 2, nothing
//! written) paths that are absolute or contain '..', missing files, SHA-256 mismatches and golden inputs that do not
//! match the manifest's declared inputs. Otherwise runs the golden inputs at full batch, times batch 1 and the full
//! batch, and writes OUT_DIR/<output>.bin (raw little-endian, row-major) plus OUT_DIR/result.json, then prints the
//! result.json path on stdout. Any other failure: one `error: ` line, exit 1. ONNX Runtime is loaded at run time
//! from ORT_DYLIB_PATH; nothing is downloaded at build or run time.

mod bundle;
mod engine;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

/// Why the runner stopped: a refusal of the bundle (exit 2) or any other failure (exit 1).
#[derive(Debug)]
pub enum Failure {
    Refusal(String),
    Error(String),
}

pub type Outcome<T> = Result<T, Failure>;

pub fn refuse<T>(message: impl Into<String>) -> Outcome<T> {
    Err(Failure::Refusal(message.into()))
}

/// Turns any displayable error (ORT, I/O) into an exit-1 failure with some context.
pub fn fail<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> Failure + '_ {
    move |e| Failure::Error(format!("{context}: {e}"))
}

const USAGE: &str = "usage: torchport-runner BUNDLE OUT_DIR [--artifact PATH]";

fn main() -> ExitCode {
    // A panic (in ort or here) must still end as one `error: ` line, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "internal error".to_string());
        eprintln!("error: {}", one_line(&message));
        std::process::exit(1);
    }));

    let Some(args) = parse_args(std::env::args().skip(1).collect()) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(&args) {
        Ok(result_path) => {
            println!("{}", result_path.display());
            ExitCode::SUCCESS
        }
        Err(Failure::Refusal(message)) => {
            eprintln!("error: {}", one_line(&message));
            ExitCode::from(2)
        }
        Err(Failure::Error(message)) => {
            eprintln!("error: {}", one_line(&message));
            ExitCode::from(1)
        }
    }
}

/// ORT messages can span lines; the contract wants exactly one line on stderr.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

struct Args {
    bundle: PathBuf,
    out_dir: PathBuf,
    artifact: Option<String>,
}

/// Exactly two positional arguments plus an optional `--artifact PATH` (or `--artifact=PATH`) anywhere.
fn parse_args(argv: Vec<String>) -> Option<Args> {
    let mut positional = Vec::new();
    let mut artifact = None;
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--artifact" {
            artifact = Some(it.next()?);
        } else if let Some(value) = arg.strip_prefix("--artifact=") {
            artifact = Some(value.to_string());
        } else if arg.starts_with("--") {
            return None;
        } else {
            positional.push(arg);
        }
    }
    if positional.len() != 2 {
        return None;
    }
    let out_dir = PathBuf::from(positional.pop()?);
    let bundle = PathBuf::from(positional.pop()?);
    Some(Args {
        bundle,
        out_dir,
        artifact,
    })
}

fn run(args: &Args) -> Outcome<PathBuf> {
    // Everything the contract calls a refusal is checked before ONNX Runtime is touched.
    let bundle = bundle::Bundle::open(&args.bundle)?;
    let artifact = bundle.select_artifact(args.artifact.as_deref())?;
    let (model_path, _) = bundle.checked_file(&artifact.entry)?;
    let golden = bundle.golden_inputs()?;
    bundle.check_inputs(&golden)?;

    let mut engine = engine::Engine::new(&model_path)?;
    let outputs = engine.run_full(&golden)?;

    let samples = golden
        .first()
        .and_then(|t| t.shape.first().copied())
        .unwrap_or(1)
        .max(1);
    let mut plan = vec![(1_i64, 20_usize)];
    if samples != 1 {
        plan.push((samples, 5));
    }
    let mut latency = Vec::new();
    for (batch, iterations) in plan {
        let median_ms = engine.median_latency_ms(&golden, batch, iterations)?;
        latency.push(json!({"batch": batch, "median_ms": median_ms, "iterations": iterations}));
    }

    write_results(&args.out_dir, &artifact, &engine.version, &outputs, latency)
}

/// An output name becomes OUT_DIR/<name>.bin: refuse one that is not a plain file name.
fn check_output_name(name: &str) -> Outcome<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return refuse(format!("output name '{name}' is not a plain file name; refusing it"));
    }
    Ok(())
}

fn write_results(
    out_dir: &Path,
    artifact: &bundle::Artifact,
    version: &str,
    outputs: &[engine::Output],
    latency: Vec<serde_json::Value>,
) -> Outcome<PathBuf> {
    for output in outputs {
        check_output_name(&output.name)?;
    }
    std::fs::create_dir_all(out_dir).map_err(fail(&format!("cannot create {}", out_dir.display())))?;
    let mut described = Vec::new();
    for output in outputs {
        let file = format!("{}.bin", output.name);
        let path = out_dir.join(&file);
        std::fs::write(&path, &output.bytes).map_err(fail(&format!("cannot write {}", path.display())))?;
        described.push(json!({"name": output.name, "path": file, "dtype": output.dtype, "shape": output.shape}));
    }
    let result = json!({
        "runtime": "onnxruntime-rust",
        "version": version,
        "device": "cpu",
        "artifact": artifact.path,
        "precision": artifact.precision,
        "outputs": described,
        "latency": latency,
    });
    let text = serde_json::to_string_pretty(&result).map_err(fail("cannot encode result.json"))? + "\n";
    let result_path = out_dir.join("result.json");
    std::fs::write(&result_path, text).map_err(fail(&format!("cannot write {}", result_path.display())))?;
    Ok(result_path)
}
