//! `fsprobe`: a test component for `wasi:filesystem`. `GET /?op=OP&path=P[&to=Q][&data=D]`
//! performs one `std::fs` operation and answers `200` with JSON: `{"ok":true,"data":"…"}` or
//! `{"ok":false,"error":"<std::io::ErrorKind>"}`.
//!
//! Operations: `read` (content), `write` (overwrite an existing file with D), `create` (a new
//! file with D), `append` (D), `truncate` (to length 0), `mkdir`, `rmdir`, `unlink`, `readdir`
//! (names, sorted, comma-separated), `stat` (`file:SIZE` or `dir`), `rename` (P to Q),
//! `symlink` (a link at Q pointing to P), `fill` (D bytes), `hold` (opens P D times, keeping
//! every handle open: `COUNT` opened, then `:KIND:ERRNO` of the first failure; with `to=MS`,
//! holds them that long before answering, after logging `fsprobe holding N files`), `spread` (D is
//! `N:SIZE`: opens files P0…P(N-1) together and writes SIZE bytes to each: `COUNT` written in
//! full, then `:KIND:ERRNO` of the first failure), `leak` (writes D to P and never closes it;
//! with `to=spin`, then spins until the node stops it).

use std::io::Write;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Component;

wasi::http::proxy::export!(Component);

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| decode(v))
        .unwrap_or_default()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn run(op: &str, path: &str, to: &str, data: &str) -> std::io::Result<String> {
    use std::fs;
    match op {
        "read" => fs::read_to_string(path),
        "write" => {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)?;
            f.write_all(data.as_bytes())?;
            f.sync_all()?;
            Ok(String::new())
        }
        "create" => {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)?;
            f.write_all(data.as_bytes())?;
            f.sync_all()?;
            Ok(String::new())
        }
        "fill" => {
            // Writes `data` (a decimal size) bytes in 64 KiB chunks, then syncs.
            let size: usize = data.parse().map_err(|_| std::io::ErrorKind::InvalidInput)?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?;
            let chunk = vec![b'z'; 64 * 1024];
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len());
                f.write_all(&chunk[..n])?;
                left -= n;
            }
            f.sync_all()?;
            Ok(String::new())
        }
        "hold" => {
            let n: usize = data.parse().map_err(|_| std::io::ErrorKind::InvalidInput)?;
            let mut held = Vec::with_capacity(n);
            let mut answer = None;
            for _ in 0..n {
                match fs::File::open(path) {
                    Ok(f) => held.push(f),
                    Err(e) => {
                        answer = Some(format!("{}:{}", held.len(), describe(&e)));
                        break;
                    }
                }
            }
            // `to=MS`: keep the handles open that long before answering.
            if let Ok(ms) = to.parse::<u64>() {
                // A log line (guest stderr) tells a test that the handles are held now.
                eprintln!("fsprobe holding {} files", held.len());
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            Ok(answer.unwrap_or_else(|| held.len().to_string()))
        }
        "spread" => {
            let (n, size) = data
                .split_once(':')
                .and_then(|(n, s)| Some((n.parse::<usize>().ok()?, s.parse::<usize>().ok()?)))
                .ok_or(std::io::ErrorKind::InvalidInput)?;
            let mut files = Vec::with_capacity(n);
            for i in 0..n {
                files.push(
                    fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(format!("{path}{i}"))?,
                );
            }
            let chunk = vec![b's'; 64 * 1024];
            let mut done = 0;
            for f in &mut files {
                let mut left = size;
                while left > 0 {
                    let k = left.min(chunk.len());
                    if let Err(e) = f.write_all(&chunk[..k]) {
                        return Ok(format!("{done}:{}", describe(&e)));
                    }
                    left -= k;
                }
                done += 1;
            }
            Ok(done.to_string())
        }
        "leak" => {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?;
            f.write_all(data.as_bytes())?;
            std::mem::forget(f);
            if to == "spin" {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            Ok(String::new())
        }
        "append" => {
            let mut f = fs::OpenOptions::new().append(true).open(path)?;
            f.write_all(data.as_bytes())?;
            f.sync_all()?;
            Ok(String::new())
        }
        "truncate" => {
            let f = fs::OpenOptions::new().write(true).open(path)?;
            f.set_len(0)?;
            f.sync_all()?;
            Ok(String::new())
        }
        "mkdir" => fs::create_dir(path).map(|_| String::new()),
        "rmdir" => fs::remove_dir(path).map(|_| String::new()),
        "unlink" => fs::remove_file(path).map(|_| String::new()),
        "readdir" => {
            let mut names = Vec::new();
            for e in fs::read_dir(path)? {
                names.push(e?.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            Ok(names.join(","))
        }
        "stat" => {
            let m = fs::metadata(path)?;
            Ok(if m.is_dir() {
                "dir".to_string()
            } else {
                format!("file:{}", m.len())
            })
        }
        "rename" => fs::rename(path, to).map(|_| String::new()),
        "symlink" => symlink(path, to).map(|_| String::new()),
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("unknown op {other}"),
        )),
    }
}

/// `KIND:ERRNO` of an I/O error.
fn describe(e: &std::io::Error) -> String {
    format!("{:?}:{}", e.kind(), e.raw_os_error().unwrap_or(-1))
}

/// Creates a symbolic link at `link` (absolute, resolved against the preopens) pointing to
/// `target`, through `wasi:filesystem` directly (std has no stable call for it on WASI).
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    use wasi::filesystem::types::ErrorCode;
    let dirs = wasi::filesystem::preopens::get_directories();
    let (dir, rel) = dirs
        .iter()
        .filter_map(|(d, name)| {
            let rest = link.strip_prefix(name.as_str())?;
            let rest = if name == "/" {
                rest
            } else {
                rest.strip_prefix('/')?
            };
            Some((d, rest))
        })
        .max_by_key(|(_, rest)| std::cmp::Reverse(rest.len()))
        .ok_or_else(|| Error::from(ErrorKind::NotFound))?;
    dir.symlink_at(target, rel).map_err(|code| {
        Error::from(match code {
            ErrorCode::Access | ErrorCode::NotPermitted => ErrorKind::PermissionDenied,
            ErrorCode::NoEntry => ErrorKind::NotFound,
            ErrorCode::Exist => ErrorKind::AlreadyExists,
            _ => ErrorKind::Other,
        })
    })
}

impl Guest for Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let pq = request.path_with_query().unwrap_or_default();
        let query = pq.split_once('?').map(|(_, q)| q).unwrap_or("");
        let result = run(
            &param(query, "op"),
            &param(query, "path"),
            &param(query, "to"),
            &param(query, "data"),
        );
        let json = match result {
            Ok(data) => format!("{{\"ok\":true,\"data\":\"{}\"}}", escape(&data)),
            Err(e) => format!(
                "{{\"ok\":false,\"error\":\"{:?}\",\"errno\":{}}}",
                e.kind(),
                e.raw_os_error().unwrap_or(-1)
            ),
        };
        let Ok(headers) =
            Fields::from_list(&[("content-type".to_string(), b"application/json".to_vec())])
        else {
            return;
        };
        let response = OutgoingResponse::new(headers);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(out) = body.write() {
            let _ = out.blocking_write_and_flush(json.as_bytes());
        }
        let _ = OutgoingBody::finish(body, None);
    }
}
