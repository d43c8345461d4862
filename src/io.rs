//! Guarded input and output of the CLI.
//!
//! Inputs: `-` is standard input; a path must name a regular file (a FIFO would block
//! forever, a device such as `/dev/zero` never ends), opened without blocking, and
//! whole-file reads are capped. Outputs: `-` is standard output; a path is written to a
//! temporary sibling and renamed over the target only once complete; a symbolic link,
//! FIFO, device or directory at the target is never replaced, nor an input file (same
//! device and inode, whatever the path), nor a file the user may not write. An
//! interrupted write (SIGINT, SIGTERM, SIGHUP) removes its temporary file
//! ([`install_signal_cleanup`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The temporary file being written, removed by the signal thread on interruption.
static IN_PROGRESS: Mutex<Option<PathBuf>> = Mutex::new(None);

fn in_progress() -> std::sync::MutexGuard<'static, Option<PathBuf>> {
    IN_PROGRESS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a thread that, on SIGINT, SIGTERM or SIGHUP, removes the temporary file of
/// a write in progress and exits with 128 + the signal number (130 for SIGINT).
pub fn install_signal_cleanup() -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            // Holding the lock keeps the writer from creating or renaming meanwhile.
            let guard = in_progress();
            if let Some(tmp) = guard.as_ref() {
                let _ = std::fs::remove_file(tmp);
            }
            let _ = writeln!(std::io::stderr(), "specreplay: interrupted");
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

/// Whether `path` is the conventional `-` (standard input or output).
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// A file's identity: (device, inode).
pub type Identity = (u64, u64);

/// Opens an input for streaming: `-` = standard input, else a regular file. Returns the
/// reader and, for a regular file, its identity (to refuse writing over it).
pub fn open_input(path: &Path) -> Result<(Box<dyn Read>, Option<Identity>), String> {
    if is_stdio(path) {
        let id = stdin_identity();
        return Ok((Box::new(std::io::stdin().lock()), id));
    }
    let p = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{p}: cannot read: {}", io_reason(&e)))?;
    check_regular_input(path, &meta)?;
    // O_NONBLOCK: should the path turn into a FIFO between the check and the open, the
    // open must not wait for a writer.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("{p}: cannot read: {}", io_reason(&e)))?;
    let meta = file.metadata().map_err(|e| format!("{p}: cannot read: {}", io_reason(&e)))?;
    check_regular_input(path, &meta)?;
    Ok((Box::new(file), Some((meta.dev(), meta.ino()))))
}

fn check_regular_input(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    if meta.is_dir() {
        return Err(format!("{}: is a directory, not a file", path.display()));
    }
    if !meta.is_file() {
        return Err(format!(
            "{}: not a regular file (a FIFO, device or socket is not read; use - for standard input)",
            path.display()
        ));
    }
    Ok(())
}

fn stdin_identity() -> Option<Identity> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let meta = File::from(fd).metadata().ok()?;
    meta.is_file().then(|| (meta.dev(), meta.ino()))
}

/// Reads a whole input, failing past `limit` bytes (an endless input stops there).
pub fn read_capped(path: &Path, r: &mut dyn Read, limit: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{}: cannot read: {}", path.display(), io_reason(&e)))?;
    if out.len() as u64 > limit {
        return Err(format!("{}: larger than {limit} bytes (is it the right file?)", path.display()));
    }
    Ok(out)
}

/// `std::io::Error` without the "(os error N)" suffix.
pub fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// An output being written: standard output, or a temporary file renamed into place by
/// [`Output::commit`] (and removed if dropped before).
pub struct Output {
    target: PathBuf,
    sink: Sink,
}

enum Sink {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File { tmp: PathBuf, file: std::io::BufWriter<File>, mode: Option<std::fs::Permissions> },
    Done,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Prepares to write `path` (`-` = standard output), refusing targets that must not be
/// replaced; `inputs` are the identities of the files this command reads.
pub fn create_output(path: &Path, inputs: &[Option<Identity>]) -> Result<Output, String> {
    if is_stdio(path) {
        return Ok(Output { target: path.into(), sink: Sink::Stdout(std::io::BufWriter::new(std::io::stdout())) });
    }
    let p = path.display();
    let existing = check_target(path, inputs)?;
    let name = path.file_name().ok_or_else(|| format!("{p}: not a file path"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if std::fs::metadata(&dir).is_ok_and(|m| m.permissions().readonly()) {
        return Err(format!("{p}: directory {} is not writable (read-only)", dir.display()));
    }
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{}.specreplay-tmp.{}.{n}", name.to_string_lossy(), std::process::id()));
    let file = {
        let mut guard = in_progress();
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&tmp)
            .map_err(|e| format!("{p}: cannot create a file in {}: {}", dir.display(), io_reason(&e)))?;
        *guard = Some(tmp.clone());
        f
    };
    let mode = existing.map(|m| m.permissions());
    Ok(Output { target: path.into(), sink: Sink::File { tmp, file: std::io::BufWriter::new(file), mode } })
}

/// Writes `bytes` to `path` the safe way ([`create_output`] then [`Output::commit`]): for
/// the small JSON reports of the `gpu` commands.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut out = create_output(path, &[])?;
    out.write_all(bytes).map_err(|e| format!("{}: cannot write: {}", path.display(), io_reason(&e)))?;
    out.commit()
}

/// Refuses a target that is a symlink, not a regular file, an input, or not writable;
/// returns its metadata when it exists.
fn check_target(path: &Path, inputs: &[Option<Identity>]) -> Result<Option<std::fs::Metadata>, String> {
    let p = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{p}: cannot write: {}", io_reason(&e))),
    };
    if meta.file_type().is_symlink() {
        return Err(format!("{p}: is a symbolic link; refusing to replace it (name the file it points to)"));
    }
    if !meta.is_file() {
        return Err(format!("{p}: not a regular file (a FIFO, device, socket or directory); refusing to replace it"));
    }
    if inputs.iter().flatten().any(|&id| id == (meta.dev(), meta.ino())) {
        return Err(format!(
            "{p}: is the input file; refusing to overwrite what is being read (choose another output)"
        ));
    }
    // A file without any write permission is refused even where the kernel would let
    // the user replace it (root, or a writable directory): its mode says "keep".
    if meta.permissions().readonly() {
        return Err(format!("{p}: not writable (read-only file); refusing to replace it"));
    }
    // Opening for writing (no truncation) asks the kernel whether the user may write it.
    if let Err(e) = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path) {
        return Err(format!("{p}: not writable: {}", io_reason(&e)));
    }
    Ok(Some(meta))
}

impl Output {
    /// Finishes the write: flush, sync, rename over the target (re-checked first).
    pub fn commit(mut self) -> Result<(), String> {
        let p = self.target.display().to_string();
        match std::mem::replace(&mut self.sink, Sink::Done) {
            Sink::Stdout(mut w) => w.flush().map_err(|e| format!("standard output: {}", io_reason(&e))),
            Sink::File { tmp, file, mode } => {
                let done = (|| {
                    let file = file.into_inner().map_err(|e| format!("{p}: cannot write: {}", io_reason(e.error())))?;
                    if let Some(m) = mode {
                        file.set_permissions(m).map_err(|e| format!("{p}: cannot write: {}", io_reason(&e)))?;
                    }
                    file.sync_all().map_err(|e| format!("{p}: cannot write: {}", io_reason(&e)))?;
                    if let Ok(m) = std::fs::symlink_metadata(&self.target) {
                        if m.file_type().is_symlink() || !m.is_file() {
                            return Err(format!("{p}: became a link or special file during the write; not replaced"));
                        }
                    }
                    let mut guard = in_progress();
                    std::fs::rename(&tmp, &self.target).map_err(|e| format!("{p}: cannot write: {}", io_reason(&e)))?;
                    *guard = None;
                    Ok(())
                })();
                if done.is_err() {
                    remove_tmp(&tmp);
                }
                done
            }
            Sink::Done => Ok(()),
        }
    }
}

fn remove_tmp(tmp: &Path) {
    let mut guard = in_progress();
    let _ = std::fs::remove_file(tmp);
    if guard.as_deref() == Some(tmp) {
        *guard = None;
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Sink::File { tmp, .. } = &self.sink {
            remove_tmp(tmp);
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.sink {
            Sink::Stdout(w) => w.write(buf),
            Sink::File { file, .. } => file.write(buf),
            Sink::Done => Err(std::io::Error::other("output already committed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Stdout(w) => w.flush(),
            Sink::File { file, .. } => file.flush(),
            Sink::Done => Ok(()),
        }
    }
}
