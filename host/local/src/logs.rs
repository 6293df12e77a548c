//! Where output goes and how it is read back: one append-only file per
//! instance, `logs/<service>/<slot>-<instance>.log`, and one per job,
//! `logs/<service>/job-<name>.log`, both under the state directory.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The most a log read returns; a tail request never loads a huge file.
pub const MAX_READ: u64 = 4 * 1024 * 1024;

pub fn instance_log(state_dir: &Path, service: &str, slot: &str, instance: usize) -> PathBuf {
    state_dir
        .join("logs")
        .join(service)
        .join(format!("{slot}-{instance}.log"))
}

/// Job names are free text, so anything outside a portable alphabet
/// becomes `_` in the file name.
pub fn job_log(state_dir: &Path, service: &str, job: &str) -> PathBuf {
    let name: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir
        .join("logs")
        .join(service)
        .join(format!("job-{name}.log"))
}

/// The last `max` bytes of a file, as text (invalid UTF-8 replaced).
pub fn tail_bytes(path: &Path, max: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut buf = Vec::new();
    file.take(max).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The last `lines` lines of a file (within its last [`MAX_READ`] bytes).
pub fn tail_lines(path: &Path, lines: usize) -> io::Result<String> {
    let text = tail_bytes(path, MAX_READ)?;
    if lines == 0 {
        return Ok(String::new());
    }
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let start = body
        .rmatch_indices('\n')
        .nth(lines - 1)
        .map_or(0, |(i, _)| i + 1);
    Ok(text[start..].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_layout() {
        let dir = Path::new("/state");
        assert_eq!(
            instance_log(dir, "api", "canary", 2),
            Path::new("/state/logs/api/canary-2.log")
        );
        assert_eq!(
            job_log(dir, "api", "db migrate/../x"),
            Path::new("/state/logs/api/job-db_migrate_.._x.log")
        );
    }

    #[test]
    fn tails_are_the_last_lines_or_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        assert_eq!(tail_lines(&path, 2).unwrap(), "two\nthree\n");
        assert_eq!(tail_lines(&path, 9).unwrap(), "one\ntwo\nthree\n");
        assert_eq!(tail_lines(&path, 0).unwrap(), "");
        assert_eq!(tail_bytes(&path, 6).unwrap(), "three\n");
        std::fs::write(&path, "no newline").unwrap();
        assert_eq!(tail_lines(&path, 1).unwrap(), "no newline");
        assert!(tail_lines(&dir.path().join("missing"), 1).is_err());
    }
}
