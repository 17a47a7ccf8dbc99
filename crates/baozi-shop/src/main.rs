//! `baozi-shop`: the bun shop. With no arguments, the seed scenario; `baozi-shop run` for the
//! harness; `baozi-shop shm` to list or remove leftover shared-memory objects.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
