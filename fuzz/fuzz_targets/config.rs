//! Server settings: `Config::load` (TOML file, then `TIDINGS_*` variables,
//! then validation), the path the server takes at start.
//!
//! Input: the TOML file's text; after a line `#--env--` (a TOML comment, so
//! seeds stay valid TOML), one `NAME=value` variable per line.
//!
//! What must hold for an accepted config:
//! * it validates again and names a store;
//! * written back as TOML it loads to an equal config (no setting is lost or
//!   changed by the file format);
//! * given instead as one `TIDINGS_*` variable per setting (each value as a
//!   TOML literal) it loads to an equal config, so every setting the file
//!   can hold the environment can hold too (the file's directory, kept for
//!   resolving relative schema paths, is not a setting).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tidings_server::config::{env_name, Config};

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("tidings-fuzz-config-{}.toml", std::process::id()))
    })
}

fn load_text(text: &str, env: Vec<(String, String)>) -> Result<Config, String> {
    std::fs::write(scratch(), text).expect("writing the scratch config file");
    Config::load(Some(scratch()), env, vec![]).map_err(|e| e.to_string())
}

/// One `TIDINGS_*` variable per setting of `config`, values as TOML literals.
fn as_env(config: &Config) -> Vec<(String, String)> {
    let toml::Value::Table(table) = toml::Value::try_from(config).expect("config to TOML value")
    else {
        panic!("config is not a table");
    };
    let mut env = Vec::new();
    for (key, value) in &table {
        match (key.as_str(), value) {
            ("auth", toml::Value::Table(auth)) => {
                for (k, v) in auth {
                    env.push((env_name(&format!("auth.{k}")), v.to_string()));
                }
            }
            _ => env.push((env_name(key), value.to_string())),
        }
    }
    env
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (file, env_text) = match input.strip_prefix("#--env--\n") {
        Some(e) => ("", e),
        None => input.split_once("\n#--env--\n").unwrap_or((input, "")),
    };
    let env: Vec<(String, String)> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let Ok(config) = load_text(file, env) else {
        return;
    };
    config.validate().expect("a loaded config validates");
    config.store_url().expect("a loaded config names a store");

    let written = toml::to_string(&config).expect("a loaded config serializes to TOML");
    let reloaded = load_text(&written, vec![])
        .unwrap_or_else(|e| panic!("written config does not load: {e}\n{written}"));
    assert_eq!(reloaded, config, "file round trip\n{written}");

    let env = as_env(&config);
    let from_env = Config::load(None, env.clone(), vec![])
        .unwrap_or_else(|e| panic!("config as variables does not load: {e}\n{env:?}"));
    // Only a file has a directory (what relative schema paths resolve
    // against); every setting is the same.
    let from_file = Config {
        config_dir: None,
        ..config
    };
    assert_eq!(from_env, from_file, "variables\n{env:?}");
});
