//! The dashboard: `GET /` and `GET /assets/...`, static files compiled into
//! the binary (no CDN, nothing fetched from elsewhere, works offline), and
//! `GET /stats`, the numbers it polls.
//!
//! The page is plain modern JavaScript served as is; it imports the
//! TypeScript client's committed build (`clients/typescript/dist`), whose
//! ES modules are served side by side under `/assets/client/` (the entry is
//! `/assets/client/index.js`; its relative imports resolve there). The
//! asset table is a fixed list compiled in, looked up by exact name, so no
//! path reaches the disk. Every HTML answer carries a strict
//! Content-Security-Policy: scripts, styles and fetches from this origin
//! only (plus this host's WebSocket), no inline code, no framing.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::request::{principal, Params};
use crate::response::{not_found, respond};
use crate::service::Service;

/// A file served under `/assets/`: its name (maybe with a directory, as in
/// `client/index.js`), content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: &str = include_str!("../assets/index.html");

/// One module of the client's build, served as `/assets/client/FILE`.
macro_rules! client_module {
    ($file:literal) => {
        Asset {
            name: concat!("client/", $file),
            content_type: "text/javascript; charset=utf-8",
            body: include_bytes!(concat!("../../../clients/typescript/dist/", $file)),
        }
    };
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/app.css"),
    },
    Asset {
        name: "rates.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/rates.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/favicon.svg"),
    },
    // Every `.js` file of the client's build (a test checks the list).
    client_module!("index.js"),
    client_module!("client.js"),
    client_module!("errors.js"),
    client_module!("live.js"),
    client_module!("sse.js"),
    client_module!("types.js"),
    client_module!("ws.js"),
];

/// The policy for the page. `connect-src` names this host's WebSocket
/// explicitly (older browsers do not let `'self'` cover `ws:`), and only
/// when the `Host` header is a plain host name (nothing that could end the
/// directive).
fn content_security_policy(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        });
    let sockets = host.map_or(String::new(), |h| format!(" ws://{h} wss://{h}"));
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{sockets}; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

fn security_headers(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// `GET /`: the dashboard page.
pub async fn index(headers: HeaderMap) -> Response {
    let csp = content_security_policy(&headers);
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    response
        .headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    security_headers(&mut response);
    response
}

/// `GET /assets/{*path}`: one of the embedded files, by exact name, or 404.
pub async fn asset(Path(path): Path<String>) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == path) else {
        return not_found().await;
    };
    let mut response = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, a.content_type),
            // Same binary, same bytes; a new binary may change them.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        a.body,
    )
        .into_response();
    security_headers(&mut response);
    response
}

/// `GET /stats`: the dashboard's numbers (a token when auth is on; the
/// channels are those the caller may subscribe to).
pub async fn stats(
    State(svc): State<Arc<Service>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result =
        principal(&svc, &headers, &Params::parse(q.as_deref())).map(|who| Json(svc.stats(&who)));
    respond(&svc, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_only_a_plain_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7700"));
        let p = content_security_policy(&h);
        assert!(
            p.contains("connect-src 'self' ws://127.0.0.1:7700 wss://127.0.0.1:7700;"),
            "{p}"
        );
        h.insert(header::HOST, HeaderValue::from_static("a; script-src *"));
        let p = content_security_policy(&h);
        assert!(p.contains("connect-src 'self';"), "{p}");
        assert!(!p.contains('*'), "{p}");
    }

    #[tokio::test]
    async fn an_asset_is_found_by_its_exact_name_only() {
        // As the router hands them over: decoded, not normalized.
        for path in ["client/index.js", "client/ws.js", "app.js"] {
            let r = asset(Path(path.to_owned())).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
        }
        for path in [
            "client/../app.js",
            "client/./index.js",
            "client//index.js",
            "/client/index.js",
            "client\\index.js",
            "../Cargo.toml",
            "client/../../../../Cargo.toml",
            "client/index.d.ts",
            "client/",
            "client",
            "index.js",
            "tidings-client.js",
            "",
        ] {
            let r = asset(Path(path.to_owned())).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    /// The names of the client's build that `from "./x.js"` imports in
    /// `body` (the forms tsc emits: `import ... from`, `export ... from`).
    fn relative_imports(body: &str) -> Vec<&str> {
        body.split("from \"./")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect()
    }

    #[test]
    fn every_module_of_the_client_build_is_served() {
        let dist =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/typescript/dist");
        let mut built: Vec<String> = std::fs::read_dir(&dist)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".js"))
            .collect();
        built.sort();
        let mut served: Vec<String> = ASSETS
            .iter()
            .filter_map(|a| a.name.strip_prefix("client/"))
            .map(str::to_owned)
            .collect();
        served.sort();
        assert_eq!(built, served, "the client modules in ASSETS and dist/");
        for a in ASSETS.iter().filter(|a| a.name.starts_with("client/")) {
            let body = std::str::from_utf8(a.body).unwrap();
            for import in relative_imports(body) {
                let name = format!("client/{import}");
                assert!(
                    ASSETS.iter().any(|b| b.name == name),
                    "{} imports ./{import}, which is not served",
                    a.name
                );
            }
        }
        let entry = ASSETS.iter().find(|a| a.name == "client/index.js").unwrap();
        assert!(!relative_imports(std::str::from_utf8(entry.body).unwrap()).is_empty());
    }
}
