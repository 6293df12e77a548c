//! The dashboard's static files, embedded in the binary and served under a
//! name with their content's hash (`htmx.min.<hash>.js`), so a browser may
//! keep them for good and a new build's files are new names.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file.
pub(crate) struct Asset {
    /// The name pages refer to it by.
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const FILES: [Asset; 4] = [
    Asset {
        name: "htmx.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/vendor/htmx.min.js"),
    },
    Asset {
        name: "sse.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/vendor/sse.min.js"),
    },
    Asset {
        name: "ui.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/ui.js"),
    },
    Asset {
        name: "ui.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/ui.css"),
    },
];

/// Each file's served name, computed once.
fn hashed() -> &'static Vec<String> {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        FILES
            .iter()
            .map(|a| {
                let hash = hex::encode(&Sha256::digest(a.body)[..6]);
                let (stem, ext) = a.name.rsplit_once('.').unwrap_or((a.name, ""));
                format!("{stem}.{hash}.{ext}")
            })
            .collect()
    })
}

/// The URL of `name` (one of the embedded files).
pub(crate) fn url(name: &str) -> String {
    let i = FILES.iter().position(|a| a.name == name).unwrap_or(0);
    format!("/ui/assets/{}", hashed()[i])
}

/// `GET /ui/assets/{file}`: only the current hashed names exist.
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    match hashed().iter().position(|n| *n == file) {
        Some(i) => (
            [
                (header::CONTENT_TYPE, FILES[i].content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            FILES[i].body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_urls_carry_the_content_hash() {
        let u = url("htmx.min.js");
        assert!(
            u.starts_with("/ui/assets/htmx.min.") && u.ends_with(".js"),
            "{u}"
        );
        let hash = &u["/ui/assets/htmx.min.".len()..u.len() - 3];
        assert_eq!(hash.len(), 12);
        let expected = hex::encode(&Sha256::digest(FILES[0].body)[..6]);
        assert_eq!(hash, expected);
    }
}
