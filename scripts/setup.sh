#!/usr/bin/env bash
# Installs what zerocore needs on a fresh machine: the wasm targets for the guest workspace, and
# the C (clang, lld, wasi-libc) and AssemblyScript (node, npm) toolchains that build the
# preview1 probes of the `zero convert` tests (scripts/build-wasip1.sh).
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
