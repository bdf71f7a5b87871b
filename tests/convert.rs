//! End-to-end tests of `zero convert` + `zero run` with wasm32-wasip1 programs of three
//! toolchains: Rust (`p1-command`), C (clang + wasi-libc, `guest/wasip1/c`) and AssemblyScript
//! (`guest/wasip1/as`). Each is the same probe (see `guest/wasip1/c/probe.c`); a converted probe
//! must behave as a native preview1 runtime runs the module: exit codes, arguments, environment,
//! stdin and preopened directories.

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

/// Each toolchain's probe, converted once into `dir`.
fn converted_probes(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    [
        ("rust", guest_p1("p1-command")),
        ("c", guest_wasip1("c-probe")),
        ("assemblyscript", guest_wasip1("as-probe")),
    ]
    .into_iter()
    .map(|(toolchain, module)| {
        let component = dir.join(format!("{toolchain}.component.wasm"));
        let (code, out, err) = zero(&[
            "convert",
            module.to_str().unwrap(),
            "-o",
            component.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{toolchain}: {out}{err}");
        assert!(out.contains("command adapter"), "{toolchain}: {out}");
        (toolchain, component)
    })
    .collect()
}

/// Runs `zero ARGS` with `stdin` piped in.
fn zero_with_stdin(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(zero_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run zero");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exit_codes_pass_through_for_every_toolchain() {
    let dir = test_dir("convert-exit");
    for (toolchain, component) in converted_probes(&dir) {
        for exit in ["0", "1", "3", "255"] {
            let (code, out, err) = zero(&["run", component.to_str().unwrap(), "--exit", exit]);
            assert_eq!(code.to_string(), exit, "{toolchain}: {out}{err}");
            assert!(out.contains("arg: --exit"), "{toolchain}: {out}");
        }
        // No process status carries more than 8 bits: a larger code stays a failure (255)
        // instead of wrapping around to 0 as `exit(256)` does natively.
        let (code, out, err) = zero(&["run", component.to_str().unwrap(), "--exit", "256"]);
        assert_eq!(code, 255, "{toolchain}: {out}{err}");
    }
}

#[test]
fn arguments_and_environment_arrive_intact() {
    let dir = test_dir("convert-args");
    let args = [
        "two  spaces and a tab\there",
        r#"say "hi" and 'bye'"#,
        "",
        "--dash-looking",
        "ünïcödé ✓ 雪",
        "a=b",
    ];
    let greeting = "line one\nline two\n\nafter a blank line = still the value";
    for (toolchain, component) in converted_probes(&dir) {
        // The value is everything after the first `=`.
        let env = format!("GREETING={greeting}");
        let mut cmd = vec![
            "run",
            "--env",
            "OTHER=x",
            "--env",
            &env,
            component.to_str().unwrap(),
        ];
        cmd.extend(args);
        let (code, out, err) = zero(&cmd);
        assert_eq!(code, 0, "{toolchain}: {out}{err}");
        let expected: String = std::iter::once(component.file_name().unwrap().to_str().unwrap())
            .chain(args)
            .map(|a| format!("arg: {a}\n"))
            .collect::<String>()
            + &format!("greeting: {greeting}\n");
        assert_eq!(out, expected, "{toolchain}: {err}");
    }
}

#[test]
fn arguments_and_environment_larger_than_a_page_arrive_intact() {
    // The shim lowers the host's lists into fresh pages: several pages' worth must work too.
    // Not with the C probe: wasi-libc's allocator takes all memory up to `memory.size` at its
    // first allocation, which comes after the standard adapter took its state page (the probe's
    // preopen lookup runs first), so an argv buffer larger than the initial heap overwrites that
    // state. That is the standard adapter's limit (the same program traps without the shim);
    // the README says so.
    let dir = test_dir("convert-large");
    let big: Vec<String> = (0..3)
        .map(|i| format!("{i}{}", "x".repeat(100_000)))
        .collect();
    let greeting = "y".repeat(100_000);
    let env = format!("GREETING={greeting}");
    for (toolchain, component) in converted_probes(&dir) {
        if toolchain == "c" {
            continue;
        }
        let mut cmd = vec!["run", "--env", &env, component.to_str().unwrap()];
        cmd.extend(big.iter().map(String::as_str));
        let (code, out, err) = zero(&cmd);
        assert_eq!(code, 0, "{toolchain}: {err}");
        for arg in &big {
            assert!(out.contains(&format!("arg: {arg}\n")), "{toolchain}");
        }
        assert!(
            out.contains(&format!("greeting: {greeting}\n")),
            "{toolchain}"
        );
    }
}

#[test]
fn stdin_goes_to_a_preopened_directory_which_is_listed() {
    let dir = test_dir("convert-files");
    let input: Vec<u8> = (0..50_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    for (toolchain, component) in converted_probes(&dir) {
        let data = dir.join(format!("data-{toolchain}"));
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("before.txt"), "already here").unwrap();
        let (code, out, err) = zero_with_stdin(
            &[
                "run",
                "--dir",
                &format!("{}::/data", data.display()),
                component.to_str().unwrap(),
                "--save",
                "/data/from-stdin.txt",
                "--ls",
                "/data",
                "--exit",
                "3",
            ],
            &input,
        );
        assert_eq!(code, 3, "{toolchain}: {out}{err}");
        assert!(
            out.contains(&format!("saved {} bytes\n", input.len())),
            "{toolchain}: {out}"
        );
        assert!(
            out.ends_with("entry: before.txt\nentry: from-stdin.txt\nentry: sub\n"),
            "{toolchain}: {out}"
        );
        assert_eq!(
            std::fs::read(data.join("from-stdin.txt")).unwrap(),
            input,
            "{toolchain}"
        );
    }
}

#[test]
fn a_directory_that_is_not_granted_is_not_reachable() {
    // The paired refusal: without `--dir` the same program reaches no file at all.
    let dir = test_dir("convert-nodir");
    for (toolchain, component) in converted_probes(&dir) {
        let (code, out, err) = zero_with_stdin(
            &[
                "run",
                component.to_str().unwrap(),
                "--save",
                "/data/from-stdin.txt",
            ],
            b"secret",
        );
        assert_eq!(code, 1, "{toolchain}: {out}{err}");
        assert!(err.contains("error:"), "{toolchain}: {err}");
        assert!(!out.contains("saved"), "{toolchain}: {out}");
    }
}

#[test]
fn converted_components_import_only_standard_interfaces() {
    let dir = test_dir("convert-inspect");
    for (toolchain, component) in converted_probes(&dir) {
        let (code, out, err) = zero(&["inspect", component.to_str().unwrap()]);
        assert_eq!(code, 0, "{toolchain}: {err}");
        assert!(out.contains("kind:    component"), "{toolchain}: {out}");
        assert!(
            out.contains("world:   wasi:cli/command"),
            "{toolchain}: {out}"
        );
        let imports: Vec<&str> = out
            .lines()
            .skip_while(|l| !l.starts_with("imports:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(str::trim)
            .collect();
        assert!(
            imports.contains(&"wasi:cli/exit@0.2.12"),
            "{toolchain}: {out}"
        );
        assert!(
            imports
                .iter()
                .all(|i| i.starts_with("wasi:") && i.ends_with("@0.2.12")),
            "{toolchain}: {out}"
        );
    }
}
