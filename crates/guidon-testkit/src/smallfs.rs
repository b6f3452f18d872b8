//! A directory on a filesystem of its own, of a few megabytes, that a test
//! can fill: a size-limited tmpfs mounted for the test, so "disk full" is
//! the kernel's real `ENOSPC`, hit by SQLite itself, not a simulated error.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TempDir;

/// A tmpfs of `bytes` bytes mounted on a fresh directory; unmounted and
/// removed on drop. Mounting needs root (or `CAP_SYS_ADMIN`):
/// [`SmallFs::mount`] says why when this machine does not allow it, so the
/// test can print it and skip. (A loop device needs the same privilege; a
/// file-size limit, `RLIMIT_FSIZE`, is not the same fault: it kills the
/// process with `SIGXFSZ`, or fails with `EFBIG`, instead of `ENOSPC`.)
#[derive(Debug)]
pub struct SmallFs {
    dir: TempDir,
}

/// The filler's name inside the filesystem.
const FILLER: &str = "filler";

impl SmallFs {
    pub fn mount(label: &str, bytes: u64) -> Result<SmallFs, String> {
        let dir = TempDir::new(&format!("smallfs-{label}"));
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0777"))
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a {bytes}-byte tmpfs (it needs root or CAP_SYS_ADMIN): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallFs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.join(name)
    }

    /// Fills the filesystem with a filler file until the kernel answers
    /// `ENOSPC`; the bytes written.
    pub fn fill(&self) -> u64 {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.join(FILLER))
            .expect("create the filler");
        let chunk = vec![0x5a_u8; 4096];
        let mut written = 0_u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", self.path().display()),
            }
        }
        written
    }

    /// Removes the filler: the space is free again.
    pub fn free(&self) {
        std::fs::remove_file(self.join(FILLER)).expect("remove the filler");
    }
}

/// Linux's "No space left on device".
const ENOSPC: i32 = 28;

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazily: a process still holding a file open must not keep it
        // mounted (the directory is removed after, by `TempDir`).
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .output();
    }
}
