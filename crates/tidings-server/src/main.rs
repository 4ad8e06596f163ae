//! `tidings`: the server and its command-line client.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tidings_server::cli::Client;
use tidings_server::config::Config;

#[derive(Parser)]
#[command(name = "tidings", version, about = "An event bus that records facts")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Remote {
    /// The server to talk to.
    #[arg(long, env = "TIDINGS_SERVER", default_value = "http://127.0.0.1:7700")]
    server: String,
    /// A bearer token, if the server has auth on.
    #[arg(long, env = "TIDINGS_TOKEN")]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on (default 127.0.0.1:7700).
        #[arg(long)]
        listen: Option<String>,
        /// Directory for the embedded store (default ./tidings-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The log: sqlite:PATH, memory:, nats://HOST:PORT?stream=NAME or
        /// redis://HOST:PORT?key=NAME (default sqlite in the data dir).
        #[arg(long)]
        store: Option<String>,
        /// A TOML config file.
        #[arg(long, env = "TIDINGS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Publish one event. DATA is JSON, or a plain string.
    Publish {
        name: String,
        data: Option<String>,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print events as they happen (all events if no pattern).
    Tail {
        patterns: Vec<String>,
        /// Start after this seq (catch up first).
        #[arg(long)]
        after: Option<u64>,
        /// Print the raw JSON envelopes.
        #[arg(long)]
        json: bool,
        /// Only events this CEL expression accepts (e.g. 'data.world_id == 42').
        #[arg(long)]
        filter: Option<String>,
        /// Follow as durable consumer NAME: resume after its cursor and
        /// acknowledge every event once printed.
        #[arg(long)]
        consumer: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List durable consumers with their cursor and lag.
    Consumers {
        #[command(flatten)]
        remote: Remote,
    },
    /// Print past events, oldest first.
    History {
        pattern: Option<String>,
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        remote: Remote,
    },
    /// Write events as JSON lines, the archive's then the log's, as one
    /// gap-free range (from a server, so from anywhere).
    Export {
        /// Start after this seq (default: the first seq held).
        #[arg(long)]
        after: Option<u64>,
        /// End at this seq (default: the last seq when the export starts).
        #[arg(long)]
        until: Option<u64>,
        /// Only events matching this pattern.
        #[arg(long)]
        pattern: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Publish an export (FILE, or - for stdin) into a server, in order;
    /// original ids are the idempotency keys, so importing twice (within
    /// the server's idempotency window) imports once.
    Import {
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// List WebSocket channels and their subscribers.
    Channels {
        #[command(flatten)]
        remote: Remote,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIDINGS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let pretty =
        |v: serde_json::Value| println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            store,
            config,
        } => {
            let mut flags = Vec::new();
            if let Some(l) = listen {
                flags.push(("listen", toml::Value::String(l)));
            }
            if let Some(d) = data_dir {
                flags.push(("data_dir", toml::Value::String(d.display().to_string())));
            }
            if let Some(s) = store {
                flags.push(("store", toml::Value::String(s)));
            }
            let config = Config::load(config.as_deref(), std::env::vars(), flags)?;
            let server = tidings_server::server::start(config)
                .await
                .context("cannot start the server")?;
            println!("tidings listening on http://{}", server.addr);
            wait_for_signal().await;
            server.shutdown().await;
        }
        Command::Publish {
            name,
            data,
            source,
            key,
            remote,
        } => {
            let c = Client::new(&remote.server, remote.token);
            pretty(
                c.publish(&name, data.as_deref(), source.as_deref(), key.as_deref())
                    .await?,
            );
        }
        Command::Tail {
            patterns,
            after,
            json,
            filter,
            consumer,
            remote,
        } => {
            let c = Client::new(&remote.server, remote.token);
            let opts = tidings_server::cli::TailOptions {
                after,
                json,
                filter,
                consumer,
            };
            c.tail(&patterns, &opts, &mut std::io::stdout()).await?;
        }
        Command::Consumers { remote } => {
            let c = Client::new(&remote.server, remote.token);
            let list = c.consumers().await?;
            let rows = list["consumers"].as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                println!("no consumers");
            }
            for r in rows {
                println!(
                    "{:<24} cursor {:>10}  lag {:>8}  {}  {}",
                    r["name"].as_str().unwrap_or(""),
                    r["cursor"].as_u64().unwrap_or(0),
                    r["lag"].as_u64().unwrap_or(0),
                    if r["connected"] == true {
                        "connected"
                    } else {
                        "idle     "
                    },
                    r["patterns"]
                );
            }
        }
        Command::History {
            pattern,
            after,
            limit,
            remote,
        } => {
            let c = Client::new(&remote.server, remote.token);
            let page = c.history(pattern.as_deref(), after, limit).await?;
            for e in page["events"].as_array().into_iter().flatten() {
                println!("{e}");
            }
        }
        Command::Export {
            after,
            until,
            pattern,
            output,
            remote,
        } => {
            let c = Client::new(&remote.server, remote.token);
            let n = match output {
                Some(path) => {
                    let f = std::fs::File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut w = std::io::BufWriter::new(f);
                    let n = c.export(after, until, pattern.as_deref(), &mut w).await?;
                    w.into_inner()
                        .map_err(|e| e.into_error())
                        .and_then(|f| f.sync_all())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    n
                }
                None => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    c.export(after, until, pattern.as_deref(), &mut out).await?
                }
            };
            eprintln!("exported {n} events");
        }
        Command::Import { file, remote } => {
            let c = Client::new(&remote.server, remote.token);
            let done = if file.as_os_str() == "-" {
                c.import(std::io::stdin().lock()).await?
            } else {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("cannot open {}", file.display()))?;
                c.import(std::io::BufReader::new(f)).await?
            };
            eprintln!(
                "imported {} events ({} already there)",
                done.new, done.duplicates
            );
        }
        Command::Channels { remote } => {
            pretty(Client::new(&remote.server, remote.token).channels().await?);
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
