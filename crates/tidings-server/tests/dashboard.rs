//! The dashboard: `/` serves the page with a strict policy, `/assets/...`
//! the embedded files with their content types, and `/stats` the numbers
//! the page shows (a token when auth is on; channels scoped to the caller).

mod common;

use common::*;
use serde_json::json;
use tidings_server::config::TokenConfig;

async fn get_raw(s: &TestServer, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = s.http.get(s.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn the_page_is_html_with_a_strict_policy() {
    let s = memory_server(|_| {}).await;
    let r = get_raw(&s, "/", None).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/html"));
    let csp = header(&r, "content-security-policy").to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    let html = r.text().await.unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("/assets/app.js"));
    // Nothing from elsewhere: every src and href is local.
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            assert!(
                part.starts_with('/'),
                "{attr}{}",
                &part[..part.len().min(40)]
            );
        }
    }
}

#[tokio::test]
async fn assets_serve_with_their_content_types() {
    let s = memory_server(|_| {}).await;
    for (path, ty) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/rates.js", "text/javascript"),
        ("/assets/client/index.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ] {
        let r = get_raw(&s, path, None).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            header(&r, "content-type").starts_with(ty),
            "{path}: {}",
            header(&r, "content-type")
        );
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        assert!(!r.bytes().await.unwrap().is_empty(), "{path}");
    }
    // The client's entry re-exports its modules, which are served next to
    // it, so its relative imports resolve (the page imports the entry).
    let entry = get_raw(&s, "/assets/client/index.js", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        entry.contains("export { TidingsClient } from \"./client.js\""),
        "{entry}"
    );
    let r = get_raw(&s, "/assets/client/client.js", None).await;
    assert_eq!(r.status(), 200);
    assert!(
        header(&r, "content-type").starts_with("text/javascript"),
        "{}",
        header(&r, "content-type")
    );
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("export class TidingsClient"));
    let page = get_raw(&s, "/assets/app.js", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("from \"/assets/client/index.js\""));
    // Sent as written, a module's own name is served, and nothing else.
    assert_eq!(status_as_sent(&s, "/assets/client/index.js").await, 200);
    for bad in [
        "/assets/nope.js",
        "/assets/../Cargo.toml",
        "/assets/",
        "/assets/app.js/x",
        "/assets/tidings-client.js",
        "/assets/client/",
        "/assets/client/nope.js",
        "/assets/client/index.d.ts",
        "/assets/client/index.js/x",
        "/assets/client/../../Cargo.toml",
    ] {
        assert_eq!(status_as_sent(&s, bad).await, 404, "{bad}");
    }
}

/// The status of `GET path` with the path sent exactly as written (an HTTP
/// client would resolve `..` before sending, and never reach the route).
async fn status_as_sent(s: &TestServer, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = s.url("");
    let addr = url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

#[tokio::test]
async fn stats_has_the_documented_fields() {
    let s = memory_server(|_| {}).await;
    s.post(json!({"name": "a.b", "data": 1})).await;
    s.post(json!({"name": "a.c", "data": 2})).await;
    let mut ws = s.ws("/ws/events/route").await;
    let _welcome = next_json(&mut ws).await;
    let (status, v) = s.get("/stats").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["last_seq"], 2);
    assert_eq!(v["published"], 2);
    assert_eq!(v["connections"]["ws"], 1);
    assert_eq!(v["connections"]["sse"], 0);
    assert_eq!(v["connections"]["total"], 1);
    assert_eq!(v["channels"]["route"], 1);
    assert_eq!(v["total_channels"], 1);
    assert_eq!(v["health"], "ok");
    assert_eq!(v["auth"], false);
    for k in ["ws", "sse", "total"] {
        assert!(v["delivered"][k].is_u64(), "{v}");
    }
    assert!(v["subscriptions"].is_u64() && v["lagged"].is_u64(), "{v}");
    // Deliveries are counted.
    let mut sub = s.ws("/ws?pattern=a.*&after=0").await;
    next_json(&mut sub).await;
    next_json(&mut sub).await;
    next_json(&mut sub).await;
    let (_, v) = s.get("/stats").await;
    assert!(v["delivered"]["ws"].as_u64().unwrap() >= 2, "{v}");
}

#[tokio::test]
async fn stats_needs_a_token_when_auth_is_on_and_scopes_channels() {
    let s = memory_server(|c| {
        c.auth.tokens = vec![
            TokenConfig {
                token: "orders".into(),
                name: None,
                publish: vec!["orders.>".into()],
                subscribe: vec!["orders.>".into()],
            },
            TokenConfig {
                token: "all".into(),
                name: None,
                publish: vec![">".into()],
                subscribe: vec![">".into()],
            },
        ];
    })
    .await;
    let r = get_raw(&s, "/stats", None).await;
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], 401);
    assert_eq!(get_raw(&s, "/stats", Some("wrong")).await.status(), 401);
    // The page itself is public: it asks for the token.
    assert_eq!(get_raw(&s, "/", None).await.status(), 200);
    assert_eq!(get_raw(&s, "/assets/app.js", None).await.status(), 200);

    let mut a = s.ws("/ws/events/orders.eu?token=all").await;
    next_json(&mut a).await;
    let mut b = s.ws("/ws/events/payroll?token=all").await;
    next_json(&mut b).await;
    let v: serde_json::Value = get_raw(&s, "/stats", Some("all"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["total_channels"], 2, "{v}");
    assert_eq!(v["auth"], true);
    let v: serde_json::Value = get_raw(&s, "/stats?token=orders", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["total_channels"], 1, "{v}");
    assert_eq!(v["channels"]["orders.eu"], 1, "{v}");
    assert!(v["channels"].get("payroll").is_none(), "{v}");
}
