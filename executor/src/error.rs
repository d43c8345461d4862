//! Typed errors of the executor.

/// Everything the executor can fail with. The CLI maps [`ExecError::NoDriver`] to its own
/// exit code (3) and everything else to 2.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// `libcuda` cannot be loaded, the driver does not initialise, or it sees no device.
    #[error("no CUDA driver found: {0}")]
    NoDriver(String),
    /// `libnvrtc.so.13` (or another NVRTC) cannot be loaded.
    #[error("no NVRTC library found: {0}")]
    NoNvrtc(String),
    /// NVRTC rejected a kernel module; `log` is NVRTC's program log.
    #[error("NVRTC failed to compile module {module} ({options}):\n{log}")]
    Compile { module: String, options: String, log: String },
    /// An NVRTC call other than the compilation itself failed.
    #[error("NVRTC: {0}")]
    Nvrtc(String),
    /// A CUDA driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    /// A step's inputs do not fit the persistent buffers or are inconsistent.
    #[error("invalid step input: {0}")]
    InvalidInput(String),
    /// A kernel module or entry point is unknown.
    #[error("unknown kernel {0:?}")]
    UnknownKernel(String),
    /// Bad user input to a command (a file that cannot be read, an unknown option value).
    #[error("{0}")]
    Input(String),
    /// A checkpoint is unusable: a missing tensor, a wrong shape or dtype, an unknown
    /// architecture, an unreadable `config.json`.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A CUDA graph could not be captured.
    #[error("CUDA graph capture: {0}")]
    Capture(String),
}

/// Result alias of the executor.
pub type Result<T> = std::result::Result<T, ExecError>;
