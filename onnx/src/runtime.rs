//! ONNX Runtime: the library loaded once per process (from `ORT_DYLIB_PATH`)
//! and model sessions loaded once per process per model file.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::error::OnnxError;

/// The environment variable naming the ONNX Runtime library
/// (`libonnxruntime.so.1.x`).
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// The environment variable setting the threads one model run may use
/// (default: ONNX Runtime's own choice, one per core).
pub const THREADS_ENV: &str = "CLOTHJOB_ONNX_THREADS";

/// The library name searched on the loader's path when `ORT_DYLIB_PATH` is unset.
const DEFAULT_LIBRARY: &str = "libonnxruntime.so";

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static ENVIRONMENT_INIT: Mutex<()> = Mutex::new(());
static MODELS: Mutex<Option<HashMap<PathBuf, Arc<Model>>>> = Mutex::new(None);

/// The ONNX Runtime library this process uses: `ORT_DYLIB_PATH`, or
/// `libonnxruntime.so` on the loader's search path.
pub fn library_path() -> PathBuf {
    match std::env::var_os(DYLIB_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_LIBRARY),
    }
}

/// Loads ONNX Runtime from `library` unless it is loaded already (then
/// `library` is ignored). A failure is not remembered: a later call may try
/// another library. Never panics, also when ONNX Runtime's loader would.
pub fn init_runtime(library: &Path) -> Result<(), OnnxError> {
    environment_from(library).map(|_| ())
}

fn environment() -> Result<&'static Environment, OnnxError> {
    match ENVIRONMENT.get() {
        Some(env) => Ok(env),
        None => environment_from(&library_path()),
    }
}

fn environment_from(library: &Path) -> Result<&'static Environment, OnnxError> {
    let _guard = ENVIRONMENT_INIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let fail = |reason: String| OnnxError::LoadRuntime {
        path: library.to_path_buf(),
        reason,
    };
    // A bare name is left to the loader's search path; a path must exist.
    let named_path = library.components().count() > 1;
    if named_path && !library.is_file() {
        return Err(fail("no such file".to_owned()));
    }
    let library = if named_path {
        std::path::absolute(library).map_err(|e| fail(e.to_string()))?
    } else {
        library.to_path_buf()
    };
    let built = std::panic::catch_unwind(AssertUnwindSafe(|| {
        ort::init_from(&library)
            .map_err(|e| e.to_string())?
            .with_name("clothjob")
            .build()
            .map_err(|e| e.to_string())
    }));
    match built {
        Ok(Ok(env)) => Ok(ENVIRONMENT.get_or_init(|| env)),
        Ok(Err(reason)) => Err(fail(reason)),
        Err(panic) => Err(fail(format!(
            "the loader panicked: {}",
            panic_text(&*panic)
        ))),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// The declared type of one model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Its name in the graph.
    pub name: String,
    /// True for 32-bit floats.
    pub is_f32: bool,
    /// Dimensions; -1 where the model leaves one open.
    pub dims: Vec<i64>,
}

impl TensorSpec {
    fn of(name: &str, ty: &ValueType) -> Self {
        match ty {
            ValueType::Tensor { ty, shape, .. } => Self {
                name: name.to_owned(),
                is_f32: *ty == TensorElementType::Float32,
                dims: shape.to_vec(),
            },
            _ => Self {
                name: name.to_owned(),
                is_f32: false,
                dims: Vec::new(),
            },
        }
    }

    /// `float 1x3x320x320`, with `?` for open dimensions.
    pub fn describe(&self) -> String {
        let dims: Vec<String> = self
            .dims
            .iter()
            .map(|&d| if d < 0 { "?".to_owned() } else { d.to_string() })
            .collect();
        let ty = if self.is_f32 { "float" } else { "non-float" };
        if dims.is_empty() {
            format!("{ty} scalar or non-tensor")
        } else {
            format!("{ty} {}", dims.join("x"))
        }
    }

    /// True when dimension `i` is open or equal to `value`.
    pub fn allows(&self, i: usize, value: i64) -> bool {
        self.dims.get(i).is_some_and(|&d| d < 0 || d == value)
    }

    /// Dimension `i` when the model fixes it.
    pub fn fixed(&self, i: usize) -> Option<u32> {
        self.dims
            .get(i)
            .and_then(|&d| u32::try_from(d).ok())
            .filter(|&d| d > 0)
    }
}

/// A loaded model: one ONNX Runtime session, shared by every backend of the
/// process that uses the same file.
pub struct Model {
    path: PathBuf,
    session: Mutex<Session>,
    input: TensorSpec,
    output: TensorSpec,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("input", &self.input)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// The model at `path`, loaded on first use and then taken from a
    /// process-wide cache keyed by the file's canonical path.
    pub fn load(path: &Path) -> Result<Arc<Model>, OnnxError> {
        let read_err = |source| OnnxError::ReadModel {
            path: path.to_path_buf(),
            source,
        };
        let key = path.canonicalize().map_err(read_err)?;
        let mut cache = MODELS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(model) = cache.as_ref().and_then(|c| c.get(&key)) {
            return Ok(Arc::clone(model));
        }
        let env = environment()?;
        let bytes = std::fs::read(&key).map_err(read_err)?;
        let model = Arc::new(Self::from_bytes(env, path, &bytes)?);
        cache
            .get_or_insert_with(HashMap::new)
            .insert(key, Arc::clone(&model));
        Ok(model)
    }

    fn from_bytes(env: &Environment, path: &Path, bytes: &[u8]) -> Result<Self, OnnxError> {
        let parse_err = |reason: String| OnnxError::ParseModel {
            path: path.to_path_buf(),
            reason,
        };
        let mut builder = Session::builder(env).map_err(|e| parse_err(e.to_string()))?;
        if let Some(threads) = threads() {
            builder = builder
                .with_intra_threads(threads)
                .map_err(|e| parse_err(e.to_string()))?;
        }
        let session = builder
            .commit_from_memory(bytes)
            .map_err(|e| parse_err(e.to_string()))?;
        let spec = |outlets: &[ort::value::Outlet], what: &str| {
            outlets
                .first()
                .map(|o| TensorSpec::of(o.name(), o.dtype()))
                .ok_or_else(|| OnnxError::ModelShape {
                    path: path.to_path_buf(),
                    what: format!("{what} 0"),
                    expected: "a tensor".to_owned(),
                    actual: "none".to_owned(),
                })
        };
        let input = spec(session.inputs(), "input")?;
        let output = spec(session.outputs(), "output")?;
        Ok(Self {
            path: path.to_path_buf(),
            session: Mutex::new(session),
            input,
            output,
        })
    }

    /// The model file as it was given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first input's declared type.
    pub fn input(&self) -> &TensorSpec {
        &self.input
    }

    /// The first output's declared type.
    pub fn output(&self) -> &TensorSpec {
        &self.output
    }

    /// Runs the model on one float tensor `data` of `shape` and hands the
    /// first output (its dimensions and values) to `read`.
    pub fn run<R>(
        &self,
        shape: [usize; 4],
        data: &[f32],
        read: impl FnOnce(&[usize], &[f32]) -> Result<R, OnnxError>,
    ) -> Result<R, OnnxError> {
        let run_err = |reason: String| OnnxError::RunModel {
            path: self.path.clone(),
            reason,
        };
        let input =
            TensorRef::from_array_view((shape, data)).map_err(|e| run_err(e.to_string()))?;
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = session
            .run(ort::inputs![self.input.name.as_str() => input])
            .map_err(|e| run_err(e.to_string()))?;
        let first = outputs
            .get(self.output.name.as_str())
            .ok_or_else(|| run_err(format!("no output named {}", self.output.name)))?;
        let (dims, values) = first
            .try_extract_tensor::<f32>()
            .map_err(|e| run_err(format!("output 0 is not a float tensor: {e}")))?;
        let dims: Vec<usize> = dims
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(0))
            .collect();
        read(&dims, values)
    }
}

/// Threads for one run from `CLOTHJOB_ONNX_THREADS` (unset or 0: ONNX
/// Runtime's default).
fn threads() -> Option<usize> {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
}
