//! `[[schemas]]` against the real server: a publish whose data fails is
//! 422 `schema_violation` with the JSON pointer; a batch is refused whole
//! and names the event; CloudEvents (structured, batch, binary) are held
//! to the same schemas; `GET /schemas` lists them; a bad schema stops the
//! real binary at start, naming the file and the problem.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tidings_server::config::SchemaConfig;

const ORDER: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["id", "items"],
  "properties": {
    "id": {"type": "integer"},
    "items": {"type": "array", "minItems": 1, "items": {
      "type": "object",
      "required": ["sku", "qty"],
      "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}
    }}
  }
}"#;

/// A memory server with `orders.>` held to [`ORDER`].
async fn orders_server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("order.json");
    std::fs::write(&file, ORDER).unwrap();
    let s = memory_server(|c| {
        c.schemas = vec![SchemaConfig {
            pattern: "orders.>".into(),
            schema: file,
        }];
    })
    .await;
    (s, dir)
}

fn good() -> Value {
    json!({"id": 1, "items": [{"sku": "a", "qty": 2}]})
}

async fn last_seq(s: &TestServer) -> u64 {
    s.get("/healthz").await.1["last_seq"].as_u64().unwrap()
}

#[tokio::test]
async fn a_violating_publish_is_422_with_the_pointer_and_nothing_is_stored() {
    let (s, _dir) = orders_server().await;
    let (st, body) = s
        .post(
            json!({"name": "orders.placed", "data": {"id": 1, "items": [{"sku": "a", "qty": 0}]}}),
        )
        .await;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["code"], "schema_violation");
    assert_eq!(body["status"], 422);
    assert_eq!(body["path"], "/items/0/qty");
    assert_eq!(body["index"], 0);
    assert_eq!(body["pattern"], "orders.>");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("/items/0/qty") && msg.contains("minimum"),
        "{msg}"
    );

    // No data at all is `null`, which is not an object.
    let (st, body) = s.post(json!({"name": "orders:placed"})).await;
    assert_eq!((st, body["path"].as_str()), (422, Some("")), "{body}");

    assert_eq!(last_seq(&s).await, 0);
    assert_eq!(s.get("/events").await.1["events"], json!([]));
    let (st, ok) = s
        .post(json!({"name": "orders.placed", "data": good()}))
        .await;
    assert_eq!((st, &ok["seq"]), (200, &json!(1)), "{ok}");
    // Names no pattern matches are not checked.
    let (st, _) = s
        .post(json!({"name": "users.joined", "data": "anything"}))
        .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn a_batch_with_one_bad_event_commits_nothing_and_says_which() {
    let (s, _dir) = orders_server().await;
    s.post(json!({"name": "orders.placed", "data": good()}))
        .await;
    let (st, body) = s
        .post(json!([
            {"name": "orders.placed", "data": good()},
            {"name": "users.joined", "data": null},
            {"name": "orders.shipped", "data": {"id": "seven", "items": []}},
        ]))
        .await;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["code"], "schema_violation");
    assert_eq!((&body["index"], &body["path"]), (&json!(2), &json!("/id")));
    assert!(
        body["error"].as_str().unwrap().starts_with("event 2 "),
        "{body}"
    );
    assert_eq!(last_seq(&s).await, 1, "nothing of the batch was committed");
    let (st, next) = s
        .post(json!({"name": "orders.placed", "data": good()}))
        .await;
    assert_eq!((st, &next["seq"]), (200, &json!(2)), "no seq was used");
    let metrics = s.http.get(s.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("tidings_schema_violations_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn cloudevents_in_every_mode_are_held_to_the_schemas() {
    let (s, _dir) = orders_server().await;
    let ce = |id: &str, data: Value| json!({"specversion": "1.0", "type": "orders.placed", "source": "/shop", "id": id, "data": data});
    let (st, body) = s
        .post_raw(
            "application/cloudevents+json",
            ce("1", json!({"id": 1})).to_string(),
        )
        .await;
    assert_eq!((st, body["code"].as_str()), (422, Some("schema_violation")));
    assert_eq!(body["path"], "");

    let batch = json!([
        ce("2", good()),
        ce("3", json!({"id": 1, "items": [{"sku": 5, "qty": 1}]}))
    ]);
    let (st, body) = s
        .post_raw("application/cloudevents-batch+json", batch.to_string())
        .await;
    assert_eq!(st, 422, "{body}");
    assert_eq!(
        (&body["index"], &body["path"]),
        (&json!(1), &json!("/items/0/sku"))
    );

    let binary = |data: &'static str| {
        s.http
            .post(s.url("/events"))
            .header("ce-specversion", "1.0")
            .header("ce-type", "orders.placed")
            .header("ce-source", "/shop")
            .header("ce-id", "4")
            .header("content-type", "application/json")
            .body(data)
            .send()
    };
    let r = binary(r#"{"id":1,"items":[]}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["path"], "/items");
    assert_eq!(last_seq(&s).await, 0);

    let r = binary(r#"{"id":1,"items":[{"sku":"a","qty":1}]}"#)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (st, _) = s
        .post_raw("application/cloudevents+json", ce("5", good()).to_string())
        .await;
    assert_eq!(st, 200);
    assert_eq!(last_seq(&s).await, 2);
}

#[tokio::test]
async fn get_schemas_lists_them() {
    let (s, dir) = orders_server().await;
    let (st, body) = s.get("/schemas").await;
    assert_eq!(st, 200, "{body}");
    let list = body["schemas"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["pattern"], "orders.>");
    assert_eq!(
        Path::new(list[0]["schema_file"].as_str().unwrap()),
        dir.path().join("order.json")
    );
    assert_eq!(
        list[0]["schema"],
        serde_json::from_str::<Value>(ORDER).unwrap()
    );

    let plain = memory_server(|_| {}).await;
    assert_eq!(plain.get("/schemas").await, (200, json!({"schemas": []})));
}

/// Runs `tidings serve --config FILE` and returns its exit status and
/// stderr, or panics if it is still running after 20 s.
fn serve_fails(config: &Path) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory:"])
        .arg("--config")
        .arg(config)
        .env("TIDINGS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started despite a bad schema");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_bad_schema_stops_the_real_binary_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidings.toml");
    std::fs::write(dir.path().join("broken.json"), "{\"type\": \"object\",").unwrap();
    std::fs::write(dir.path().join("invalid.json"), r#"{"type": "strnig"}"#).unwrap();
    for (file, problem) in [
        ("broken.json", "is not valid JSON"),
        ("invalid.json", "is not a valid JSON Schema"),
        ("missing.json", "cannot read schema file"),
    ] {
        std::fs::write(
            &config,
            format!("[[schemas]]\npattern = \"orders.>\"\nschema = \"{file}\"\n"),
        )
        .unwrap();
        let (code, stderr) = serve_fails(&config);
        assert_ne!(code, 0, "{file}: {stderr}");
        assert!(
            stderr.contains(file) && stderr.contains(problem),
            "{file}: {stderr}"
        );
        assert!(stderr.contains("schemas[0]"), "{file}: {stderr}");
    }
    std::fs::write(
        &config,
        "[[schemas]]\npattern = \"orders..x\"\nschema = \"invalid.json\"\n",
    )
    .unwrap();
    let (code, stderr) = serve_fails(&config);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("schemas[0]: pattern \"orders..x\""),
        "{stderr}"
    );
    std::fs::write(
        &config,
        "[[schemas]]\npattern = \"orders.>\"\nfile = \"order.json\"\n",
    )
    .unwrap();
    let (code, stderr) = serve_fails(&config);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("file"),
        "unknown keys are refused: {stderr}"
    );
}

#[tokio::test]
async fn the_real_binary_resolves_a_relative_schema_against_its_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    std::fs::write(dir.path().join("schemas/order.json"), ORDER).unwrap();
    let config = dir.path().join("tidings.toml");
    std::fs::write(
        &config,
        "store = \"memory:\"\n[[schemas]]\npattern = \"orders.>\"\nschema = \"schemas/order.json\"\n",
    )
    .unwrap();
    // The test runs in the crate's directory, not the config's.
    let (child, base) = spawn_binary(&["--config".as_ref(), config.as_os_str()]);
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/events"))
        .json(&json!({"name": "orders.placed", "data": {"id": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "schema_violation");
    let list: Value = http
        .get(format!("{base}/schemas"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["schemas"][0]["pattern"], "orders.>");
}
