// probe: a wasm32-wasip1 program in AssemblyScript (with @assemblyscript/wasi-shim) for testing
// `zero convert` + `zero run`; it behaves as the C probe (../c/probe.c), which says what it does.
// The shim has no file API, so files and directories go through the preview1 functions directly.
import {
  errno,
  fd,
  fd_close,
  fd_prestat_dir_name,
  fd_prestat_get,
  fd_readdir,
  fd_write,
  oflags,
  path_open,
  prestat,
  rights,
} from "bindings/wasi_snapshot_preview1";

function fail(message: string): void {
  process.stderr.write("error: " + message + "\n");
  process.exit(1);
}

// The preopened directory whose name starts `path`, and the rest of `path` below it.
function resolve(path: string): fd[] {
  const out = new Array<fd>(0);
  const stat = memory.data(8);
  for (let dir: fd = 3; ; dir++) {
    if (fd_prestat_get(dir, changetype<prestat>(stat)) != errno.SUCCESS) break;
    const len = load<u32>(stat, 4);
    const name = new ArrayBuffer(<i32>len);
    if (fd_prestat_dir_name(dir, changetype<usize>(name), len) != errno.SUCCESS) break;
    const prefix = String.UTF8.decode(name);
    if (path == prefix || path.startsWith(prefix + "/")) {
      out.push(dir);
      return out;
    }
  }
  fail("no preopened directory holds " + path);
  return out;
}

function relative(path: string, dir: fd): string {
  const stat = memory.data(8);
  fd_prestat_get(dir, changetype<prestat>(stat));
  const rest = path.substring(<i32>load<u32>(stat, 4));
  return rest.startsWith("/") ? rest.substring(1) : rest.length == 0 ? "." : rest;
}

function open(path: string, flags: u16, base: u64): fd {
  const dir = resolve(path)[0];
  const rel = String.UTF8.encode(relative(path, dir));
  const opened = memory.data(4);
  const err = path_open(dir, 0, changetype<usize>(rel), rel.byteLength, flags, base, base, 0, opened);
  if (err != errno.SUCCESS) fail("cannot open " + path + ": " + "errno " + err.toString());
  return load<u32>(opened);
}

function save(path: string): void {
  const file = open(path, oflags.CREAT | oflags.TRUNC, rights.FD_WRITE);
  const buf = new ArrayBuffer(4096);
  const iov = memory.data(8);
  const written = memory.data(4);
  let total = 0;
  while (true) {
    const n = process.stdin.read(buf);
    if (n <= 0) break;
    let at = 0;
    while (at < n) {
      store<u32>(iov, changetype<usize>(buf) + at);
      store<u32>(iov, n - at, 4);
      if (fd_write(file, iov, 1, written) != errno.SUCCESS) fail("cannot write " + path);
      at += <i32>load<u32>(written);
    }
    total += n;
  }
  fd_close(file);
  console.log("saved " + total.toString() + " bytes");
}

function list(path: string): void {
  const dir = open(path, oflags.DIRECTORY, rights.FD_READDIR);
  const names = new Array<string>(0);
  const buf = new ArrayBuffer(65536);
  const used = memory.data(4);
  let cookie: u64 = 0;
  while (true) {
    const base = changetype<usize>(buf);
    const err = fd_readdir(dir, base, buf.byteLength, cookie, used);
    if (err != errno.SUCCESS) fail("cannot list " + path + ": " + "errno " + err.toString());
    const n = <usize>load<u32>(used);
    let at: usize = 0;
    let complete = false;
    // A dirent is d_next (u64), d_ino (u64), d_namlen (u32), d_type (u8), padding, then the name.
    while (at + 24 <= n) {
      const namlen = <usize>load<u32>(base + at, 16);
      if (at + 24 + namlen > n) break;
      cookie = load<u64>(base + at);
      const name = String.UTF8.decodeUnsafe(base + at + 24, namlen);
      if (name != "." && name != "..") names.push(name);
      at += 24 + namlen;
      complete = at == n;
    }
    if (n < <usize>buf.byteLength && (complete || n == 0)) break;
  }
  fd_close(dir);
  names.sort();
  for (let i = 0; i < names.length; i++) console.log("entry: " + names[i]);
}

const args = process.argv;
for (let i = 0; i < args.length; i++) console.log("arg: " + args[i]);
const env = process.env;
if (env.has("GREETING")) console.log("greeting: " + env.get("GREETING"));
let code = 0;
for (let i = 1; i < args.length; i++) {
  if (args[i] == "--save" && i + 1 < args.length) {
    save(args[++i]);
  } else if (args[i] == "--ls" && i + 1 < args.length) {
    list(args[++i]);
  } else if (args[i] == "--exit" && i + 1 < args.length) {
    code = I32.parseInt(args[++i]);
  }
}
process.exit(code);
