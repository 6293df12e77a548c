//! Files replaced whole or not at all: the compiled-component cache, the
//! download cache and `rollcage.lock` all write this way, so a crash or a
//! full disk leaves the old file or the new one, never half of one.
//!
//! The bytes go to a temporary file in the same folder (so the rename does
//! not cross file systems), are flushed to disk, and the file is renamed
//! over the target; the folder is then flushed too, so the rename itself
//! survives a power cut. A temporary file is created only if no file has
//! its name (the process id, a counter and the clock make it), so two
//! threads or processes writing the same target never share one, and a
//! failed write removes only the temporary file it made.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
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
    // Processes in other containers sharing the folder may have this one's
    // id: a name already taken is passed over.
    let candidates = std::iter::repeat_with(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        dir.join(format!(
            ".{}.{}.{}.{nanos:x}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    })
    .take(64);
    let (tmp, mut file) = create_temp(candidates, mode)?;
    let written = (|| {
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

/// The first of `candidates` that no file has, created with `mode`.
fn create_temp(
    candidates: impl Iterator<Item = PathBuf>,
    mode: u32,
) -> std::io::Result<(PathBuf, std::fs::File)> {
    for tmp in candidates {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free name for a temporary file"))
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
    fn a_failed_rename_leaves_what_was_there_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A folder with something in it where the file should go: the
        // rename fails after the temporary file is written...
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), b"kept").unwrap();
        assert!(write_atomically(&target, b"new", Access::Shared).is_err());
        // ...and the write leaves nothing of itself behind.
        assert_eq!(names(dir.path()), ["target"]);
        assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"kept");
        // A folder for shared files is not made.
        let missing = dir.path().join("missing/file");
        assert!(write_atomically(&missing, b"x", Access::Shared).is_err());
        assert_eq!(names(dir.path()), ["target"]);
    }

    #[test]
    fn a_temporary_name_someone_else_holds_is_passed_over_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join(".entry.7.0.tmp");
        std::fs::write(&theirs, b"theirs").unwrap();
        let mine = dir.path().join(".entry.7.1.tmp");
        let (got, _file) = create_temp([theirs.clone(), mine.clone()].into_iter(), 0o600).unwrap();
        assert_eq!(got, mine);
        assert_eq!(std::fs::read(&theirs).unwrap(), b"theirs");
        // With every name taken, it says so and touches none.
        let e = create_temp([theirs.clone()].into_iter(), 0o600).unwrap_err();
        assert_eq!(e.to_string(), "no free name for a temporary file");
        assert_eq!(std::fs::read(&theirs).unwrap(), b"theirs");
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
