//! The server's data contracts: the `[[schemas]]` settings, compiled once
//! at start and handed to the bus, so the core checks every publish (JSON
//! envelope, batch, CloudEvents in either mode) before anything is
//! appended.
//!
//! # Contract
//!
//! * Every entry is compiled when the server starts. A pattern that does
//!   not parse, a file that is missing, not JSON or not a valid JSON
//!   Schema stops the start with a [`SchemaLoadError`] naming the entry
//!   (`schemas[i]`), its file and the problem; a server never runs with a
//!   schema it could not compile.
//! * A relative `schema` path resolves against the config file's
//!   directory ([`Config::schema_path`]).
//! * An event is checked against every entry whose pattern matches its
//!   name. The refusal ([`tidings_core::EmitError::Contract`]) becomes a
//!   [`ServiceError`](super::ServiceError) with code `schema_violation`,
//!   the JSON pointer (`path`) and the event's `index` in the publish.
//! * [`Schemas::list`] is what `GET /schemas` answers: every entry, in
//!   configuration order, with its file and document.

use std::path::PathBuf;

use serde_json::{json, Value};
use tidings_core::{BusBuilder, Pattern};
use tidings_schema::{Schema, SchemaError};

use crate::config::Config;

/// A `[[schemas]]` entry that could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum SchemaLoadError {
    /// Its pattern is invalid.
    #[error("invalid setting schemas[{index}]: pattern {pattern:?}: {reason}")]
    Pattern {
        /// Its position in the settings.
        index: usize,
        /// The pattern.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
    /// Its file could not be read or compiled (the error names the file).
    #[error("invalid setting schemas[{index}] (pattern {pattern:?}): {error}")]
    Schema {
        /// Its position in the settings.
        index: usize,
        /// The pattern.
        pattern: String,
        /// What is wrong with the file (it names the file; shown in this
        /// message, so not chained as a source).
        error: SchemaError,
    },
}

/// One compiled entry.
struct Entry {
    pattern: Pattern,
    file: PathBuf,
    schema: Schema,
}

/// The compiled `[[schemas]]`, in configuration order.
#[derive(Default)]
pub struct Schemas {
    entries: Vec<Entry>,
}

impl Schemas {
    /// Compiles every `[[schemas]]` entry of `config`.
    pub fn load(config: &Config) -> Result<Schemas, SchemaLoadError> {
        let mut entries = Vec::with_capacity(config.schemas.len());
        for (index, s) in config.schemas.iter().enumerate() {
            let pattern = Pattern::parse(&s.pattern).map_err(|e| SchemaLoadError::Pattern {
                index,
                pattern: s.pattern.clone(),
                reason: e.to_string(),
            })?;
            let file = config.schema_path(s);
            let schema = Schema::from_file(&file).map_err(|error| SchemaLoadError::Schema {
                index,
                pattern: s.pattern.clone(),
                error,
            })?;
            tracing::info!(pattern = %s.pattern, file = %file.display(), "schema compiled");
            entries.push(Entry {
                pattern,
                file,
                schema,
            });
        }
        Ok(Schemas { entries })
    }

    /// `builder` with every schema as a data contract.
    pub fn apply(&self, builder: BusBuilder) -> BusBuilder {
        self.entries.iter().fold(builder, |b, e| {
            b.schema(e.pattern.clone(), e.schema.clone())
        })
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `GET /schemas`: `[{"pattern","schema_file","schema"}]`.
    pub fn list(&self) -> Value {
        Value::Array(
            self.entries
                .iter()
                .map(|e| {
                    json!({
                        "pattern": e.pattern.as_str(),
                        "schema_file": e.file.display().to_string(),
                        "schema": e.schema.document(),
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SchemaConfig;

    fn config(dir: &std::path::Path, entries: &[(&str, &str)]) -> Config {
        Config {
            config_dir: Some(dir.to_owned()),
            schemas: entries
                .iter()
                .map(|(p, f)| SchemaConfig {
                    pattern: (*p).into(),
                    schema: (*f).into(),
                })
                .collect(),
            ..Config::default()
        }
    }

    #[test]
    fn relative_files_resolve_against_the_config_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("order.json"), r#"{"type":"object"}"#).unwrap();
        let s = Schemas::load(&config(dir.path(), &[("orders.>", "order.json")])).unwrap();
        assert_eq!(s.len(), 1);
        let list = s.list();
        assert_eq!(list[0]["pattern"], "orders.>");
        assert_eq!(list[0]["schema"], json!({"type": "object"}));
        let file = list[0]["schema_file"].as_str().unwrap();
        assert_eq!(std::path::Path::new(file), dir.path().join("order.json"));
    }

    #[test]
    fn a_bad_entry_names_itself_its_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok.json"), "{}").unwrap();
        std::fs::write(dir.path().join("broken.json"), "{").unwrap();
        let e = Schemas::load(&config(
            dir.path(),
            &[("a", "ok.json"), ("orders.>", "broken.json")],
        ))
        .err()
        .unwrap();
        let msg = e.to_string();
        assert!(
            msg.contains("schemas[1]") && msg.contains("broken.json"),
            "{msg}"
        );
        assert!(msg.contains("not valid JSON"), "{msg}");

        let e = Schemas::load(&config(dir.path(), &[("a..b", "ok.json")]))
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("schemas[0]: pattern \"a..b\""),
            "{e}"
        );
    }
}
