//! The same figures as `sqlite_figures`, with mimalloc as the global
//! allocator (what a server binary may well choose: replay allocates and
//! frees several small objects per event, on different threads).
//!
//! ```sh
//! cargo run --release -p tidings-sqlite --example sqlite_figures_mimalloc
//! ```

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "sqlite_figures.rs"]
mod figures;

fn main() {
    println!("global allocator: mimalloc");
    figures::main();
}
