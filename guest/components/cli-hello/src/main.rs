//! `cli-hello`: a wasm32-wasip2 command component (`wasi:cli/run`) for testing how the host runs CLI
//! programs: args, env, files, exit codes. See `cli.rs` for what it does.

mod cli;

fn main() {
    cli::run()
}
