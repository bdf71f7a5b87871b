//! End-to-end tests of the `zero` CLI's component tools and its error messages.

mod support;

use support::*;

#[test]
fn convert_then_run_a_wasip1_command_module() {
    let dir = test_dir("convert");
    let module = guest_p1("p1-command");
    let component = dir.join("p1.component.wasm");
    let (code, out, err) = zero(&[
        "convert",
        module.to_str().unwrap(),
        "-o",
        component.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("command adapter"), "{out}");

    let (code, out, _) = zero(&["inspect", component.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("kind:    component"), "{out}");
    assert!(out.contains("wasi:cli/run@"), "{out}");
    assert!(out.contains("hash:    sha256:"), "{out}");

    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("in.txt"), "file contents\n").unwrap();
    let (code, out, err) = zero(&[
        "run",
        "--env",
        "GREETING=hello there",
        "--dir",
        &format!("{}::/data", data.display()),
        component.to_str().unwrap(),
        "--cat",
        "/data/in.txt",
        "--write",
        "/data/out.txt",
        "written by the guest",
        "--exit",
        "7",
    ]);
    // `proc_exit(7)` reaches the host as `wasi:cli/exit.exit-with-code(7)` (zerocore's preview1
    // shim; tests/convert.rs tests more codes and toolchains).
    assert_eq!(code, 7, "{out}{err}");
    assert!(out.contains("greeting: hello there"), "{out}");
    assert!(out.contains("file contents"), "{out}");
    assert!(out.contains("arg: --cat"), "{out}");
    assert_eq!(
        std::fs::read_to_string(data.join("out.txt")).unwrap(),
        "written by the guest"
    );
}

#[test]
fn run_a_wasip2_command_component() {
    let (code, out, err) = zero(&["run", guest_wasm("cli-hello").to_str().unwrap(), "a", "b"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("arg: a") && out.contains("arg: b"), "{out}");
    let (code, out, err) = zero(&[
        "run",
        guest_wasm("cli-hello").to_str().unwrap(),
        "--exit",
        "7",
    ]);
    assert_eq!(code, 7, "the exit code passes through; {out}{err}");
}

#[test]
fn core_modules_and_garbage_get_directions() {
    let module = guest_p1("p1-command");
    let (code, _, err) = zero(&["run", module.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("core module") && err.contains("zero convert"),
        "{err}"
    );

    let (code, out, _) = zero(&["inspect", module.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("kind:    core module"), "{out}");
    assert!(out.contains("wasi_snapshot_preview1::"), "{out}");

    let dir = test_dir("garbage");
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"#!/bin/sh\necho hi\n").unwrap();
    for cmd in ["run", "inspect"] {
        let (code, _, err) = zero(&[cmd, junk.to_str().unwrap()]);
        assert_eq!(code, 1, "{cmd}");
        assert!(err.contains("not a WebAssembly binary"), "{cmd}: {err}");
    }
    let (code, _, err) = zero(&[
        "convert",
        guest_wasm("hello").to_str().unwrap(),
        "-o",
        "/dev/null",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("already a component"), "{err}");
    let (code, _, err) = zero(&["run", dir.join("missing.wasm").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn bad_configuration_is_refused_clearly() {
    let dir = test_dir("badconfig");
    let (code, _, err) = zero(&["serve", "--config", dir.join("nope.toml").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read the configuration file"), "{err}");

    let cfg = dir.join("zerocore.toml");
    std::fs::write(&cfg, "[limits]\ncpu_time = 5\n").unwrap();
    let (code, _, err) = zero(&["serve", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown field") && err.contains("cpu_time"),
        "{err}"
    );

    std::fs::write(&cfg, "[http]\nlisten = \"127.0.0.1:99999\"\n").unwrap();
    let (code, _, err) = zero(&["serve", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("listen"), "{err}");
}

#[test]
fn a_printing_command_whose_reader_goes_away_ends_quietly() {
    // `zero inspect FILE | head -1`: the reader closes the pipe before the command has
    // printed everything. It used to panic in `println!` ("failed printing to stdout").
    use std::process::{Command, Stdio};
    let component = guest_wasm("cli-hello");
    let mut child = Command::new(zero_bin())
        .args(["inspect", component.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run zero");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for zero");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(libc_sigpipe()),
        "ends as `cat` does (success, or SIGPIPE): {:?}; {err}",
        out.status
    );
}

/// SIGPIPE's number on Linux.
fn libc_sigpipe() -> i32 {
    13
}
