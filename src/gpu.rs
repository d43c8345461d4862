//! `specreplay gpu ...`: the CUDA executor's commands.
//!
//! Exit codes: 0 success (selftest: 0 mismatches), 1 selftest mismatches, 2 any other
//! failure, 3 no CUDA driver (or no device) on this machine: one line
//! `specreplay: error: no CUDA driver found: ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use specreplay_executor::device::Device;
use specreplay_executor::{selftest, ExecError};

/// Exit code of every `gpu` command on a machine without a usable CUDA driver.
pub const EXIT_NO_DRIVER: u8 = 3;

#[derive(Subcommand)]
pub enum GpuCmd {
    /// Device, compute capability, multiprocessors, memory, driver, NVRTC and cuBLAS versions.
    Info,
    /// Every kernel against its CPU reference on random inputs, plus the step pipeline in
    /// CUDA graphs; prints kernel / cases / mismatches (exit 0 only with 0 mismatches).
    Selftest {
        /// Random cases per kernel.
        #[arg(long, default_value_t = 10_000)]
        cases: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the table as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// Runs a `gpu` command; `Err` is the one-line message of an exit-2 failure.
pub fn run(cmd: GpuCmd) -> Result<ExitCode, String> {
    match execute(cmd) {
        Ok(code) => Ok(code),
        Err(e @ ExecError::NoDriver(_)) => {
            eprintln!("specreplay: error: {e}");
            Ok(ExitCode::from(EXIT_NO_DRIVER))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn execute(cmd: GpuCmd) -> Result<ExitCode, ExecError> {
    match cmd {
        GpuCmd::Info => {
            let dev = Device::open(0)?;
            print!("{}", dev.info);
            for (name, sha) in dev.module_hashes() {
                println!("module {name:<12} sha256 {sha}");
            }
            Ok(ExitCode::SUCCESS)
        }
        GpuCmd::Selftest { cases, seed, json } => {
            let dev = Device::open(0)?;
            println!("{} (sm {}.{})", dev.info.name, dev.info.compute_capability.0, dev.info.compute_capability.1);
            // Progress on stderr with the wall time of each kernel's cases (the table on
            // stdout stays deterministic).
            let mut t = std::time::Instant::now();
            let rep = selftest::run(&dev, cases, seed, &mut |row| {
                eprintln!(
                    "  {:<22} {:>8} cases {:>8} mismatches {:>8.2} s",
                    row.kernel,
                    row.cases,
                    row.mismatches,
                    t.elapsed().as_secs_f64()
                );
                t = std::time::Instant::now();
            })?;
            print!("{}", rep.table());
            if let Some(path) = json {
                std::fs::write(&path, rep.json() + "\n")
                    .map_err(|e| ExecError::InvalidInput(format!("{}: {e}", path.display())))?;
            }
            Ok(if rep.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}
