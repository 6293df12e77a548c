//! Where a plugin's component comes from when it is not in the binary or a
//! file beside the configuration: an OCI registry (`oci://...`, the Wasm
//! OCI artifact layout other wasm tools push too) or an `https://` URL
//! pinned by SHA-256.
//!
//! * [`oci`]: a small client of the OCI distribution API: resolve a tag,
//!   pull a manifest and its wasm layer, push a component.
//! * [`https`]: download a URL and check its digest.
//! * [`lock`]: `rollcage.lock`, the digests runs are pinned to.
//! * [`store`]: downloaded components on disk by digest, verified before
//!   they are written and written atomically.
//! * [`auth`]: registry credentials from a secret or the Docker config file
//!   (its credential helpers included).
//!
//! Nothing here compiles or inspects wasm: the runtime does, after the bytes
//! are verified here.

pub mod auth;
pub mod https;
pub mod lock;
pub mod oci;
pub mod store;
mod transport;

pub use auth::Credentials;
pub use lock::{LockEntry, LockFile};
pub use oci::{OciClient, Pulled, PushAnnotations};
pub use store::BlobStore;
pub use transport::{Transport, TransportError};

use rollcage_core::Digest;
use sha2::Digest as _;

/// The SHA-256 digest of `bytes`.
pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest::from_bytes(&sha2::Sha256::digest(bytes).into())
}
