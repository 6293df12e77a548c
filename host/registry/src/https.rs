//! `component = "https://..."` with `sha256 = "..."`: download the bytes
//! and refuse them unless they have the expected digest, naming both.

use bytes::Bytes;
use rollcage_core::Digest;

use crate::Transport;

/// Why a URL gave no component.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{0}")]
    Transport(#[from] crate::TransportError),
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: more than five redirects")]
    Redirects { url: String },
    #[error("{url}: the file has digest {actual}, not the expected {expected}")]
    Mismatch {
        url: String,
        expected: Digest,
        actual: Digest,
    },
}

/// The bytes at `url`, if they have digest `expected` (following up to five
/// redirects, HTTPS only).
pub async fn download(
    transport: &Transport,
    url: &str,
    expected: &Digest,
) -> Result<Vec<u8>, DownloadError> {
    let mut current = url.to_string();
    for _ in 0..5 {
        let request = http::Request::get(&current)
            .body(Bytes::new())
            .map_err(|e| crate::TransportError {
                url: current.clone(),
                detail: e.to_string(),
            })?;
        let response = transport.send(request).await?;
        let status = response.status();
        if status.is_redirection()
            && let Some(next) = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
        {
            current = join(&current, next);
            continue;
        }
        if !status.is_success() {
            return Err(DownloadError::Status {
                url: url.into(),
                status: status.as_u16(),
            });
        }
        let bytes = response.into_body().to_vec();
        let actual = crate::digest_of(&bytes);
        if &actual != expected {
            return Err(DownloadError::Mismatch {
                url: url.into(),
                expected: expected.clone(),
                actual,
            });
        }
        return Ok(bytes);
    }
    Err(DownloadError::Redirects { url: url.into() })
}

/// `location` resolved against `base` (absolute, or a path on its origin).
pub(crate) fn join(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let origin_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    if location.starts_with('/') {
        format!("{}{location}", &base[..origin_end])
    } else {
        let dir_end = base
            .rfind('/')
            .filter(|&i| i >= origin_end)
            .unwrap_or(origin_end);
        format!("{}/{location}", &base[..dir_end])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redirects_resolve_against_the_origin() {
        assert_eq!(super::join("https://a:1/x/y", "/z?q"), "https://a:1/z?q");
        assert_eq!(super::join("https://a/x/y", "z"), "https://a/x/z");
        assert_eq!(super::join("https://a/x", "https://b/c"), "https://b/c");
    }
}
