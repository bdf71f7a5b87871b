//! Crash safety: a child process writes in a loop and is SIGKILLed mid-write; every acknowledged
//! write must survive intact and no partial file may be visible.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Noise, hash_reader};
use zerofs::{Quota, ZeroFs};

const CHILD_ENV: &str = "ZEROFS_CRASH_CHILD";
const TEST_NAME: &str = "crash_safety";

/// The child: writes `/f<N>` files of random size (every fourth write overwrites `/hot`) and
/// prints `begin <path> <seed> <size>` before each write and `acked <path> <hash>` after it
/// returns.
fn child_loop(root: &str, first: u64) -> ! {
    let fs = ZeroFs::open(root, Quota::UNLIMITED).unwrap();
    let mut out = std::io::stdout().lock();
    let mut rng: u64 = first.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    for n in first.. {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let size = rng % (3 * 1024 * 1024);
        let path = if n % 4 == 3 {
            "/hot".to_string()
        } else {
            format!("/f{n}")
        };
        writeln!(out, "begin {path} {n} {size}").unwrap();
        out.flush().unwrap();
        let e = fs.write("crash", &path, Noise::new(n, size)).unwrap();
        writeln!(out, "acked {path} {}", e.hash.unwrap()).unwrap();
        out.flush().unwrap();
    }
    unreachable!()
}

/// Per path: the last acknowledged hash, and the writes (seed, size) begun after it.
type PathState = (Option<String>, Vec<(u64, u64)>);

#[test]
fn crash_safety() {
    if let Ok(root) = std::env::var(CHILD_ENV) {
        let first = std::env::var("ZEROFS_CRASH_FIRST")
            .unwrap()
            .parse()
            .unwrap();
        child_loop(&root, first);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut state: HashMap<String, PathState> = HashMap::new();
    let mut total_acked = 0;
    let mut killed_mid_write = 0;
    for (round, delay_ms) in [(0u64, 500u64), (1, 350), (2, 650)] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("ZEROFS_CRASH_FIRST", (round * 1_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let mut acked = 0;
        for line in &lines {
            // libtest may print "test crash_safety ... " before the child's first line.
            let parts: Vec<&str> = line.split(' ').collect();
            if let ["begin", path, n, size] = parts[parts.len().saturating_sub(4)..] {
                let w = (n.parse().unwrap(), size.parse().unwrap());
                state.entry(path.into()).or_default().1.push(w);
                continue;
            }
            if let ["acked", path, hash] = parts[parts.len().saturating_sub(3)..] {
                let s = state.get_mut(path).expect("acked without begin");
                s.0 = Some(hash.into());
                s.1.clear();
                acked += 1;
            }
        }
        let last = lines
            .iter()
            .rev()
            .find(|l| l.contains("begin ") || l.contains("acked "));
        if last.is_some_and(|l| l.contains("begin ")) {
            killed_mid_write += 1;
        }
        assert!(
            acked > 0,
            "round {round}: the child acknowledged nothing: {lines:?}"
        );
        total_acked += acked;

        // Reopen (runs gc) and check.
        let fs = ZeroFs::open(dir.path(), Quota::UNLIMITED).unwrap();
        let tmp_left = std::fs::read_dir(dir.path().join("blobs/tmp"))
            .unwrap()
            .count();
        assert_eq!(tmp_left, 0, "gc at open leaves no temporary files");
        for (path, (last, pending)) in &state {
            match (fs.stat("crash", path), last) {
                (Ok(e), _) => {
                    let h = e.hash.unwrap().to_hex();
                    assert!(
                        last.as_ref() == Some(&h)
                            || pending
                                .iter()
                                .any(|&(n, size)| hash_reader(Noise::new(n, size)).0 == h),
                        "{path}: visible content {h} was never acknowledged or in flight"
                    );
                }
                (Err(zerofs::Error::NotFound(_)), None) => {} // in flight at the kill
                (Err(e), Some(_)) => panic!("{path}: acknowledged write lost: {e}"),
                (Err(e), None) => panic!("{path}: {e}"),
            }
        }
        // Every visible entry's blob exists and hashes to its recorded hash and size.
        let mut blobs = std::collections::HashSet::new();
        for e in fs.list("crash", "/").unwrap() {
            assert!(
                state.contains_key(e.path.as_str()),
                "{} was never written",
                e.path
            );
            let (h, len) = hash_reader(fs.open_read("crash", e.path.as_str()).unwrap());
            assert_eq!(
                h,
                e.hash.unwrap().to_hex(),
                "{}: blob content mismatch",
                e.path
            );
            assert_eq!(len, e.size, "{}: size mismatch", e.path);
            blobs.insert(h);
        }
        let on_disk = std::fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file())
            .count();
        assert_eq!(
            on_disk,
            blobs.len(),
            "gc at open leaves exactly the referenced blobs"
        );
        let usage = fs.usage("crash").unwrap();
        assert_eq!(usage.files as usize, fs.list("crash", "/").unwrap().len());
    }
    eprintln!(
        "crash_safety: {total_acked} acknowledged writes; {killed_mid_write} of 3 children killed mid-write"
    );
}
