//! `GET /ui`: the inspector, a page served by the station itself (DESIGN §5). Its files live in
//! `api/ui/` and are compiled into the binary, so it needs no build step and loads nothing from
//! elsewhere (its Content-Security-Policy allows this station only). The page reads the JSON
//! routes (`/cluster/stations`, `/objects`, `/admin/stats`, `/admin/objects/{id}/...`) with the
//! visitor's admin token; serving the page itself needs none, since it holds no data.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Scripts, styles, images and requests from this station only; no frames, no plugins, no forms
/// posted elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The page's files: name under `/ui/`, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("ui/app.css"),
    ),
    ("icon.svg", "image/svg+xml", include_bytes!("ui/icon.svg")),
];

/// The answer for one of [`ASSETS`], with the headers every file of the page carries.
fn asset(name: &str) -> Option<Response> {
    let (_, content_type, bytes) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
    let mut response = (StatusCode::OK, *bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Small files: revalidated on each load, so a new binary's page is seen at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

/// `GET /ui` and `GET /ui/`: the page.
pub(super) async fn index() -> Response {
    asset("index.html").unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `GET /ui/{file}`: a file of the page.
pub(super) async fn file(Path(name): Path<String>) -> Result<Response, ApiError> {
    asset(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the inspector has no file {name:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_served_with_its_type() {
        let page = std::str::from_utf8(ASSETS[0].2).unwrap();
        for (name, content_type, _) in ASSETS.iter().skip(1) {
            assert!(
                page.contains(&format!("/ui/{name}")),
                "index.html does not use {name}"
            );
            let response = asset(name).unwrap();
            assert_eq!(response.headers()[header::CONTENT_TYPE], *content_type);
            assert_eq!(response.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        }
        assert!(asset("../mod.rs").is_none());
        // Nothing is loaded from elsewhere.
        for (name, _, bytes) in ASSETS.iter().filter(|(n, _, _)| !n.ends_with(".svg")) {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{name}"
            );
        }
    }
}
