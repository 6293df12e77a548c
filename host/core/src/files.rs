//! Files replaced whole or not at all: the compiled-component cache, the
//! download cache and `rollcage.lock` all write this way, so a crash or a
//! full disk leaves the old file or the new one, never half of one.
//!
//! The bytes go to a temporary file in the same folder (so the rename does
//! not cross file systems), are flushed to disk, and the file is renamed
//! over the target; the folder is then flushed too, so the rename itself
//! survives a power cut. Temporary names carry the process id and a
//! counter, so two threads or processes writing the same target never
//! share one.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Who may read what is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Mode 0600, in folders created 0700: caches of code and downloads,
    /// which only their owner may read or change.
    OwnerOnly,
    /// Mode 0644 (less the umask), in a folder that must exist: files an
    /// operator keeps beside the configuration.
    Shared,
}

/// Replace `path` with `bytes`, atomically and durably.
pub fn write_atomically(path: &Path, bytes: &[u8], access: Access) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    let mode = match access {
        Access::OwnerOnly => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            0o600
        }
        Access::Shared => 0o644,
    };
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable once the folder's entry is on disk. A folder
    // that cannot be opened for this (some file systems) only loses that.
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollcage.lock");
        write_atomically(&path, b"first", Access::Shared).unwrap();
        write_atomically(&path, b"second", Access::Shared).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(names(dir.path()), ["rollcage.lock"]);
    }

    #[test]
    fn owner_only_files_and_their_folders_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blobs/sha256/abc");
        write_atomically(&path, b"x", Access::OwnerOnly).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("blobs/sha256")), 0o700);
        assert_eq!(mode(&dir.path().join("blobs")), 0o700);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target");
        write_atomically(&path, b"old", Access::Shared).unwrap();
        // A folder in the way of the rename: the write fails...
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), b"").unwrap();
        assert!(write_atomically(&blocked, b"new", Access::Shared).is_err());
        // ...and leaves nothing of itself behind.
        assert_eq!(names(dir.path()), ["blocked", "target"]);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        // A folder for shared files is not made.
        let missing = dir.path().join("missing/file");
        assert!(write_atomically(&missing, b"x", Access::Shared).is_err());
    }

    #[test]
    fn threads_writing_one_file_each_leave_a_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    write_atomically(path, &[i; 4096], Access::OwnerOnly).unwrap();
                });
            }
        });
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 4096);
        assert!(bytes.iter().all(|b| *b == bytes[0]));
        assert_eq!(names(dir.path()), ["entry"]);
    }
}
