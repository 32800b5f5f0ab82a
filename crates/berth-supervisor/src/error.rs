use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start `{program}` in {}: {source}", cwd.display())]
    Spawn {
        program: String,
        cwd: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Checked before spawning because the kernel reports a missing working directory with
    /// the same ENOENT as a missing program.
    #[error("cannot start `{program}`: working directory {} does not exist", cwd.display())]
    MissingWorkingDir { program: String, cwd: PathBuf },
    #[error("cannot signal process group {pgid}: {source}")]
    Signal {
        pgid: i32,
        #[source]
        source: io::Error,
    },
    #[error("waiting for process {pid}: {source}")]
    Wait {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("instance log {}: {source}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("instance log writer thread panicked")]
    LogWriterPanicked,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
