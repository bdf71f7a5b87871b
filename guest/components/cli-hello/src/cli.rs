//! The program shared by `cli-hello` (wasm32-wasip2 component) and `p1-command` (wasm32-wasip1 core
//! module).
//!
//! 1. prints every argument, `argv[0]` included, one per line as `arg: {arg}`;
//! 2. prints `greeting: {GREETING}` when the env var `GREETING` is set;
//! 3. then handles these flags in the order given:
//!    - `--cat PATH` prints the file's content as-is;
//!    - `--write PATH TEXT` writes TEXT to the file (created or truncated) and prints
//!      `wrote N bytes to PATH`;
//!    - `--save PATH` copies all of stdin into the file (created or truncated) and prints
//!      `saved N bytes`;
//!    - `--ls DIR` prints each entry of the directory, sorted, as `entry: NAME`;
//!    - `--exit N` sets the exit code (default 0).
//!
//! (`guest/wasip1/c/probe.c` and `guest/wasip1/as` are the same program in C and AssemblyScript,
//! for testing `zero convert` with other toolchains' preview1 modules.)
//!
//! A failed `--cat`/`--write` prints `error: ...` to stderr and exits with code 1 at once; a
//! missing flag argument exits with code 2.
//!
//! On wasm32-wasip2 a non-zero code is reported with `wasi:cli/exit.exit-with-code` (WASI 0.2.12),
//! because std's `process::exit` there can only say success or failure; on wasip1 `proc_exit`
//! carries any code.

use std::io::{Read as _, Write as _};

pub fn run() -> ! {
    let args: Vec<String> = std::env::args().collect();
    let mut stdout = std::io::stdout().lock();
    for arg in &args {
        let _ = writeln!(stdout, "arg: {arg}");
    }
    if let Ok(greeting) = std::env::var("GREETING") {
        let _ = writeln!(stdout, "greeting: {greeting}");
    }

    let mut exit_code = 0;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--cat" => {
                let path = arg_at(&args, i + 1, "--cat PATH");
                match std::fs::read(path) {
                    Ok(content) => {
                        let _ = stdout.write_all(&content);
                    }
                    Err(e) => fail(&mut stdout, &format!("cannot read {path}: {e}")),
                }
                i += 2;
            }
            "--write" => {
                let path = arg_at(&args, i + 1, "--write PATH TEXT");
                let text = arg_at(&args, i + 2, "--write PATH TEXT");
                match std::fs::write(path, text) {
                    Ok(()) => {
                        let _ = writeln!(stdout, "wrote {} bytes to {path}", text.len());
                    }
                    Err(e) => fail(&mut stdout, &format!("cannot write {path}: {e}")),
                }
                i += 3;
            }
            "--save" => {
                let path = arg_at(&args, i + 1, "--save PATH");
                let mut content = Vec::new();
                if let Err(e) = std::io::stdin().read_to_end(&mut content) {
                    fail(&mut stdout, &format!("cannot read stdin: {e}"));
                }
                match std::fs::write(path, &content) {
                    Ok(()) => {
                        let _ = writeln!(stdout, "saved {} bytes", content.len());
                    }
                    Err(e) => fail(&mut stdout, &format!("cannot write {path}: {e}")),
                }
                i += 2;
            }
            "--ls" => {
                let path = arg_at(&args, i + 1, "--ls DIR");
                let entries = std::fs::read_dir(path).and_then(|dir| {
                    dir.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                        .collect::<Result<Vec<_>, _>>()
                });
                match entries {
                    Ok(mut names) => {
                        names.sort();
                        for name in names {
                            let _ = writeln!(stdout, "entry: {name}");
                        }
                    }
                    Err(e) => fail(&mut stdout, &format!("cannot list {path}: {e}")),
                }
                i += 2;
            }
            "--exit" => {
                let code = arg_at(&args, i + 1, "--exit N");
                exit_code = code.parse().unwrap_or_else(|_| {
                    fail(
                        &mut stdout,
                        &format!("--exit wants an integer, got {code:?}"),
                    )
                });
                i += 2;
            }
            _ => i += 1,
        }
    }
    drop(stdout);
    exit(exit_code)
}

/// Flushes stdout and exits with `code`.
fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    #[cfg(target_env = "p2")]
    if code != 0 {
        wasi::cli::exit::exit_with_code(u8::try_from(code).unwrap_or(u8::MAX));
    }
    std::process::exit(code)
}

fn arg_at<'a>(args: &'a [String], i: usize, usage: &str) -> &'a str {
    match args.get(i) {
        Some(arg) => arg,
        None => {
            eprintln!("error: usage: {usage}");
            exit(2)
        }
    }
}

fn fail(stdout: &mut std::io::StdoutLock<'_>, message: &str) -> ! {
    let _ = stdout.flush();
    eprintln!("error: {message}");
    exit(1)
}
