//! Layering of settings: the TOML file first, then `TIDINGS_*` environment
//! variables, then command-line flags; the last one to name a key wins.
//! The merged table is deserialised once and then validated, so a
//! setting is never half-applied.
//!
//! Written by hand rather than with `figment`, on purpose: it is one
//! `toml::Table` merge, and the three things a layering crate would have
//! to be bent to do are the ones users rely on here:
//! * env names are flat (`TIDINGS_DATA_DIR` is `data_dir`, while
//!   `TIDINGS_AUTH_JWT_SECRET` is `auth.jwt_secret`), so splitting on `_`
//!   cannot find the key; [`KEYS`] says which names exist;
//! * an unknown `TIDINGS_*` variable is ignored (the environment holds
//!   other things), while an unknown key in the file is refused by
//!   `deny_unknown_fields` with the key's name;
//! * list settings take a comma list from the environment
//!   (`TIDINGS_CORS_ORIGINS=a,b`) as well as a TOML array;
//! * a text setting takes its environment value as written, or unquoted
//!   if it is a quoted TOML string ([`TEXT_KEYS`]): a secret of digits
//!   stays text, where TOML would read a number and refuse it with a type
//!   error.
//!
//! Tests check that [`KEYS`] names every setting of [`Config`] and that
//! [`TEXT_KEYS`] names every text one.

use std::path::Path;

use super::{Config, ConfigError};

/// Settings with a scalar or list value (the ones an environment variable
/// can set), as `section.key` paths.
const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "store",
    "durability",
    "batch_interval_ms",
    "retention_max_count",
    "retention_max_age_secs",
    "archive_dir",
    "max_payload",
    "max_connections",
    "max_subscribers_per_channel",
    "stream_queue",
    "keepalive_secs",
    "history_max_limit",
    "cors_origins",
    "allowed_hosts",
    "max_patterns_per_connection",
    "commands_per_sec",
    "send_timeout_secs",
    "header_read_timeout_secs",
    "body_read_timeout_secs",
    "history_max_bytes",
    "max_future_secs",
    "auth.tokens",
    "auth.jwt_secret",
    "auth.jwt_require_exp",
    "auth.jwt_leeway_secs",
    "auth.jwt_issuer",
    "auth.jwt_audience",
];

/// The settings whose value is text: an environment value is taken as
/// written, never read as TOML.
const TEXT_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "store",
    "durability",
    "archive_dir",
    "auth.jwt_secret",
    "auth.jwt_issuer",
    "auth.jwt_audience",
];

/// The environment variable of a setting.
pub fn env_name(key: &str) -> String {
    format!("TIDINGS_{}", key.replace('.', "_").to_uppercase())
}

/// `raw` read as a TOML value, if it is one.
fn as_toml(raw: &str) -> Option<toml::Value> {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()?
        .remove("v")
}

fn env_value(key: &str, raw: &str) -> toml::Value {
    if TEXT_KEYS.contains(&key) {
        // A quoted TOML string is unquoted; anything else is the text.
        return match as_toml(raw) {
            Some(v @ toml::Value::String(_)) => v,
            _ => toml::Value::String(raw.to_owned()),
        };
    }
    if let Some(v) = as_toml(raw) {
        return v;
    }
    if key == "cors_origins" || key == "allowed_hosts" {
        return toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        );
    }
    toml::Value::String(raw.to_owned())
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        Some((section, rest)) => {
            let entry = table
                .entry(section.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = entry {
                set_path(t, rest, value);
            }
        }
        None => {
            table.insert(key.to_owned(), value);
        }
    }
}

impl Config {
    /// Reads `file` (if any), overlays `TIDINGS_*` variables from `env`,
    /// then `flags` (`key`, value), and validates the result.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: Vec<(&'static str, toml::Value)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        let env: Vec<(String, String)> = env.into_iter().collect();
        for key in KEYS {
            let name = env_name(key);
            if let Some((_, raw)) = env.iter().find(|(k, _)| *k == name) {
                set_path(&mut table, key, env_value(key, raw));
            }
        }
        for (key, value) in flags {
            set_path(&mut table, key, value);
        }
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        config.config_dir = file.map(|f| f.parent().unwrap_or(Path::new(".")).to_owned());
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every setting an environment variable can set is in [`KEYS`], and
    /// [`KEYS`] names nothing else: the list cannot fall behind `Config`.
    #[test]
    fn keys_name_every_setting() {
        let value = serde_json::to_value(Config::default()).expect("serialize");
        let mut settings: Vec<String> = Vec::new();
        for (key, v) in value.as_object().expect("an object") {
            match key.as_str() {
                // A list of tables: only the file can hold it.
                "schemas" => {}
                "auth" => settings.extend(
                    v.as_object()
                        .expect("auth is a table")
                        .keys()
                        .map(|k| format!("auth.{k}")),
                ),
                _ => settings.push(key.clone()),
            }
        }
        settings.sort();
        let mut keys: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
        keys.sort();
        assert_eq!(keys, settings);
    }

    /// A text setting keeps an environment value that TOML would read as
    /// a number or a boolean; every other setting refuses a word, so a
    /// text setting missing from [`TEXT_KEYS`] fails here.
    #[test]
    fn text_keys_name_every_text_setting() {
        let load = |key: &str, raw: &str| {
            Config::load(None, vec![(env_name(key), raw.to_owned())], vec![])
        };
        let secret = load("auth.jwt_secret", "12345678901234567890123456789012").unwrap();
        assert_eq!(
            secret.auth.jwt_secret.as_deref(),
            Some("12345678901234567890123456789012")
        );
        let audience = load("auth.jwt_audience", "true").unwrap();
        assert_eq!(audience.auth.jwt_audience.as_deref(), Some("true"));
        assert_eq!(
            load("data_dir", "2024").unwrap().data_dir,
            Path::new("2024")
        );
        for key in KEYS {
            let list = matches!(*key, "cors_origins" | "allowed_hosts");
            if TEXT_KEYS.contains(key) || list {
                continue;
            }
            assert!(
                matches!(load(key, "word"), Err(ConfigError::Parse(_))),
                "{key} took a word: is it a text setting missing from TEXT_KEYS?"
            );
        }
    }
}
