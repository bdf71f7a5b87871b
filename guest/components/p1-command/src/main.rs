//! `p1-command`: the `cli-hello` program built for wasm32-wasip1, i.e. a core module (not a
//! component), for testing the host's module→component conversion. The code is shared with
//! `cli-hello`.

#[path = "../../cli-hello/src/cli.rs"]
mod cli;

fn main() {
    cli::run()
}
