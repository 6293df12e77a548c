//! Downloaded components by digest: `<dir>/blobs/sha256/<hex>`, as OCI
//! image layouts keep them. A blob is checked against its digest before it
//! is written (so nothing unverified is ever compiled), written to a
//! temporary file and renamed (so a crash leaves no half blob), and read
//! back without hashing again: the file name is the digest it was checked
//! against, and the folder is the owner's only.

use std::path::PathBuf;

use rollcage_core::Digest;
use rollcage_core::files::Access;

/// Why a blob was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the bytes have digest {actual}, not the expected {expected}")]
    Mismatch { expected: Digest, actual: Digest },
    #[error("download cache {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The download cache.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// Blobs under `dir/blobs/sha256`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BlobStore { dir: dir.into() }
    }

    /// Where the blob of `digest` lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(digest.hex())
    }

    /// Whether the blob is cached.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The cached bytes of `digest`, if any. Not hashed again: only
    /// [`BlobStore::put`] writes here, after checking the digest.
    pub fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(digest);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Check `bytes` against `digest`, then store them.
    pub fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let actual = crate::digest_of(bytes);
        if &actual != digest {
            return Err(StoreError::Mismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let path = self.path(digest);
        rollcage_core::files::write_atomically(&path, bytes, Access::OwnerOnly).map_err(
            |source| StoreError::Io {
                path: path.clone(),
                source,
            },
        )?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_stored_only_under_its_own_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path());
        let digest = crate::digest_of(b"component");
        assert_eq!(store.get(&digest).unwrap(), None);
        let path = store.put(&digest, b"component").unwrap();
        assert!(path.ends_with(format!("blobs/sha256/{}", digest.hex())));
        assert_eq!(store.get(&digest).unwrap().unwrap(), b"component");

        let other = crate::digest_of(b"other");
        match store.put(&other, b"component") {
            Err(StoreError::Mismatch { expected, actual }) => {
                assert_eq!(expected, other);
                assert_eq!(actual, digest);
            }
            other => panic!("{other:?}"),
        }
        assert!(!store.contains(&other));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }
}
