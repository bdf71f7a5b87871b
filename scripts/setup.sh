#!/usr/bin/env bash
# Installs what zerocore needs on a fresh machine: the wasm targets for the guest workspace, the
# C (clang, lld, wasi-libc) and AssemblyScript (node, npm) toolchains that build the preview1
# probes of the `zero convert` tests (scripts/build-wasip1.sh), and for the web console's
# browser test (tests/console.rs) Debian's chromium and the console's npm packages (`npm ci` in
# console/, from its committed package-lock.json).
# Idempotent and quiet when everything is there; run by run.sh and test.sh.
set -euo pipefail
if ! command -v cargo >/dev/null; then
    echo "error: cargo is not installed; install Rust 1.95 with rustup first" >&2
    exit 1
fi
rustup target add wasm32-wasip2 wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip2 wasm32-wasip1

# Debian packages: (command or file that shows it is there) package
missing=()
need() {
    if ! [ -e "$1" ] && ! command -v "$1" >/dev/null 2>&1; then
        missing+=("$2")
    fi
}
need clang clang
need wasm-ld lld
need /usr/include/wasm32-wasi/stdio.h wasi-libc
need node nodejs
need npm npm
need /usr/bin/chromium chromium
# compiler-rt's wasm32 builtins (clang links them into every wasm32-wasi program)
if ! compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a" >/dev/null; then
    missing+=(libclang-rt-dev-wasm32)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
        echo "error: missing ${missing[*]}: install them with your package manager (on Debian: apt-get install ${missing[*]})" >&2
        exit 1
    fi
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The web console's packages (vite to rebuild console/dist, playwright-core for its browser
# test), exactly as locked; again when the lock file changed since the last install.
console="$(dirname "$0")/../console"
if [ ! -e "$console/node_modules/.package-lock.json" ] || [ "$console/package-lock.json" -nt "$console/node_modules/.package-lock.json" ]; then
    echo "installing the console's npm packages"
    (cd "$console" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
