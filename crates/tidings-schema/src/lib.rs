//! # tidings-schema: JSON Schema contracts for event data
//!
//! [`Schema`] compiles a [JSON Schema](https://json-schema.org) document
//! once (with the maintained `jsonschema` crate) and implements
//! [`tidings_core::DataContract`], so a bus — the library's or the
//! server's — checks every matching event's `data` before it is appended:
//!
//! ```
//! use serde_json::json;
//! use tidings_core::{Bus, EmitError};
//! use tidings_schema::Schema;
//!
//! let order = Schema::from_value(json!({
//!     "type": "object",
//!     "required": ["id", "items"],
//!     "properties": {
//!         "id": {"type": "integer"},
//!         "items": {"type": "array", "items": {
//!             "type": "object", "required": ["qty"],
//!             "properties": {"qty": {"type": "integer", "minimum": 1}}
//!         }}
//!     }
//! })).unwrap();
//! let bus = Bus::builder().schema("orders.>", order).build().unwrap();
//! let err = bus.emit("orders.placed", json!({"id": 7, "items": [{"qty": 0}]})).unwrap_err();
//! let EmitError::Contract(r) = err else { panic!() };
//! assert_eq!(r.violation.path, "/items/0/qty");
//! ```
//!
//! # Contract
//!
//! * **Draft 2020-12.** A document without `$schema` is read as Draft
//!   2020-12; one whose `$schema` names another draft the validator knows
//!   is read as that draft. `format` is asserted (`"format": "email"`
//!   refuses a string that is not one); formats the validator does not
//!   know are ignored.
//! * **Compiled once.** [`Schema::from_value`], [`Schema::from_file`] and
//!   [`Schema::for_type`] check the document against its meta-schema and
//!   compile it; a [`Schema`] is cheap to clone and never recompiled.
//! * **Self-contained.** `$ref`s resolve inside the document only: no
//!   network and no file is read to resolve one, so a `$ref` elsewhere is
//!   a [`SchemaError::Invalid`] when the schema is built, never a surprise
//!   at emit.
//! * **The first failing place.** A refusal is a
//!   [`tidings_core::Violation`]: the JSON pointer of the first place
//!   (in the validator's order) where `data` fails, and why.
//! * **Typed events share one contract.** [`Schema::for_type`] derives a
//!   type's schema with `schemars` (it follows the type's serde
//!   attributes); [`TypedSchema::typed_schema`] registers it under a
//!   [`TypedEvent`]'s pattern, so a server given the same schema file (see
//!   [`Schema::document`]) and typed Rust code agree on the data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tidings_core::{BusBuilder, DataContract, TypedEvent, Violation};

pub use schemars;

/// Why a schema could not be built. Each variant names where the schema
/// came from (a file path, `inline`, or a Rust type).
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The file could not be read.
    #[error("cannot read schema file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("schema file {} is not valid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What the parser said (with line and column).
        source: serde_json::Error,
    },
    /// The document is not a valid JSON Schema (or a `$ref` in it cannot
    /// be resolved inside it).
    #[error("{origin} is not a valid JSON Schema: {reason}")]
    Invalid {
        /// `schema file PATH`, `the inline schema` or `the schema of TYPE`.
        origin: String,
        /// What is wrong, and where in the schema.
        reason: String,
    },
}

/// A compiled JSON Schema: a [`DataContract`] over event data.
#[derive(Clone)]
pub struct Schema {
    validator: Arc<jsonschema::Validator>,
    document: Arc<Value>,
    file: Option<Arc<Path>>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Schema {
    /// Compiles a schema document.
    pub fn from_value(document: Value) -> Result<Schema, SchemaError> {
        Self::compile(document, None, || "the inline schema".to_owned())
    }

    /// Reads and compiles a schema file (JSON).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Schema, SchemaError> {
        let path = path.as_ref();
        let text = std::fs::read(path).map_err(|source| SchemaError::Read {
            path: path.to_owned(),
            source,
        })?;
        let document: Value =
            serde_json::from_slice(&text).map_err(|source| SchemaError::Json {
                path: path.to_owned(),
                source,
            })?;
        Self::compile(document, Some(path.into()), || {
            format!("schema file {}", path.display())
        })
    }

    /// The schema of a Rust type, derived with `schemars` (Draft 2020-12;
    /// serde attributes such as `rename` and `tag` are followed).
    pub fn for_type<T: schemars::JsonSchema>() -> Result<Schema, SchemaError> {
        let document = schemars::SchemaGenerator::default()
            .into_root_schema_for::<T>()
            .to_value();
        Self::compile(document, None, || {
            format!("the schema of {}", std::any::type_name::<T>())
        })
    }

    fn compile(
        document: Value,
        file: Option<Arc<Path>>,
        origin: impl Fn() -> String,
    ) -> Result<Schema, SchemaError> {
        let invalid = |reason: String| SchemaError::Invalid {
            origin: origin(),
            reason,
        };
        if !document.is_object() && !document.is_boolean() {
            return Err(invalid(
                "a schema is a JSON object (or true/false)".to_owned(),
            ));
        }
        let mut options = jsonschema::options().should_validate_formats(true);
        if document.get("$schema").is_none() {
            options = options.with_draft(jsonschema::Draft::Draft202012);
        }
        let validator = options.build(&document).map_err(|e| {
            let at = e.instance_path().as_str();
            invalid(if at.is_empty() {
                e.to_string()
            } else {
                format!("at {at}: {e}")
            })
        })?;
        Ok(Schema {
            validator: Arc::new(validator),
            document: Arc::new(document),
            file,
        })
    }

    /// The schema document, as given (or derived).
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// The file it was read from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// `Ok` if `data` is valid, else the first failing place and why.
    pub fn validate(&self, data: &Value) -> Result<(), Violation> {
        // The fast check first; the error (with its location) is worked
        // out only for data that fails.
        if self.validator.is_valid(data) {
            return Ok(());
        }
        match self.validator.validate(data) {
            Ok(()) => Ok(()),
            Err(e) => Err(Violation::new(e.instance_path().as_str(), e.to_string())),
        }
    }
}

impl DataContract for Schema {
    fn check(&self, data: &Value) -> Result<(), Violation> {
        self.validate(data)
    }
}

/// Registers a typed event's derived schema on a [`BusBuilder`].
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tidings_core::{typed_event, Bus};
/// use tidings_schema::{schemars::JsonSchema, TypedSchema};
///
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct OrderPlaced { id: u64, total_cents: u64 }
/// typed_event!(OrderPlaced => "orders.placed");
///
/// let bus = Bus::builder().typed_schema::<OrderPlaced>().unwrap().build().unwrap();
/// bus.emit_typed(&OrderPlaced { id: 1, total_cents: 995 }).unwrap();
/// // Untyped code emitting the same name is held to the same contract:
/// assert!(bus.emit("orders.placed", serde_json::json!({"id": "one"})).is_err());
/// ```
pub trait TypedSchema: Sized {
    /// Checks events matching `T::PATTERN` against `T`'s derived schema.
    fn typed_schema<T: TypedEvent + schemars::JsonSchema>(self) -> Result<Self, SchemaError>;
}

impl TypedSchema for BusBuilder {
    fn typed_schema<T: TypedEvent + schemars::JsonSchema>(self) -> Result<Self, SchemaError> {
        Ok(self.schema(T::PATTERN, Schema::for_type::<T>()?))
    }
}

#[cfg(test)]
mod tests;
