;; zerocore's preview1 shim: the five `wasi_snapshot_preview1` functions whose standard adapter
;; behaviour differs from a native preview1 runtime, written against the WASI 0.2 interfaces.
;;
;; `zero convert` points the module's imports of these functions at this module (import module
;; `zerocore_preview1`) and links it with wit-component as a second adapter; everything else goes
;; to the standard adapter. See `mod.rs` beside this file for why each function is here.
;;
;; Memory: lowering a list from the host needs room in the program's memory that the program is
;; not using. Every call takes fresh pages with `memory.grow` and forgets them when it returns; it
;; never reuses them, because an allocator that claims all memory up to `memory.size` when it
;; starts (AssemblyScript's) may own them by then. A call costs one page (64 KiB) for arguments or
;; an environment up to that size; programs make these calls a few times, at startup.
(module
  (import "env" "memory" (memory 0))
  ;; wasi:cli/environment@0.2.12: both return a list through a pointer to (ptr, len).
  (import "wasi:cli/environment@0.2.12" "get-arguments" (func $get_arguments (param i32)))
  (import "wasi:cli/environment@0.2.12" "get-environment" (func $get_environment (param i32)))
  ;; wasi:cli/exit@0.2.12
  (import "wasi:cli/exit@0.2.12" "exit-with-code" (func $exit_with_code (param i32)))

  ;; The scratch region of the current call: [$next, $end). $end = 0: none yet.
  (global $next (mut i32) (i32.const 0))
  (global $end (mut i32) (i32.const 0))

  ;; Allocates `size` bytes aligned to `align` (a power of two) in the current call's scratch
  ;; region, growing memory by enough fresh pages when it does not fit.
  (func $alloc (param $align i32) (param $size i32) (result i32)
    (local $ptr i32) (local $pages i32) (local $old i32)
    ;; The host never lowers a list near 2 GiB; refusing it keeps the arithmetic below exact.
    (if (i32.gt_u (local.get $size) (i32.const 0x7fff0000)) (then unreachable))
    (if (i32.gt_u (local.get $align) (i32.const 0x10000)) (then unreachable))
    (local.set $ptr
      (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (if (i32.or
          (i32.eqz (global.get $end))
          (i32.gt_u (i32.add (local.get $ptr) (local.get $size)) (global.get $end)))
      (then
        ;; Enough pages for the allocation at any page-aligned start.
        (local.set $pages
          (i32.shr_u (i32.add (local.get $size) (i32.const 0xffff)) (i32.const 16)))
        (if (i32.eqz (local.get $pages)) (then (local.set $pages (i32.const 1))))
        (local.set $old (memory.grow (local.get $pages)))
        (if (i32.eq (local.get $old) (i32.const -1)) (then unreachable))
        ;; A new region starts at the first fresh page (memory.grow's old size).
        (local.set $ptr (i32.shl (local.get $old) (i32.const 16)))
        (global.set $end
          (i32.shl (i32.add (local.get $old) (local.get $pages)) (i32.const 16)))))
    (global.set $next (i32.add (local.get $ptr) (local.get $size)))
    (local.get $ptr))

  ;; Starts a call: no scratch region yet.
  (func $reset
    (global.set $next (i32.const 0))
    (global.set $end (i32.const 0)))

  ;; What the host's lowering calls to place the lists it returns.
  (func (export "cabi_import_realloc")
    (param $old_ptr i32) (param $old_size i32) (param $align i32) (param $new_size i32)
    (result i32)
    (if (i32.or (local.get $old_ptr) (local.get $old_size)) (then unreachable))
    (call $alloc (local.get $align) (local.get $new_size)))

  ;; Calls get-arguments (or get-environment) and returns the address of its (ptr, len).
  (func $arguments (result i32)
    (local $ret i32)
    (call $reset)
    (local.set $ret (call $alloc (i32.const 4) (i32.const 8)))
    (call $get_arguments (local.get $ret))
    (local.get $ret))
  (func $environment (result i32)
    (local $ret i32)
    (call $reset)
    (local.set $ret (call $alloc (i32.const 4) (i32.const 8)))
    (call $get_environment (local.get $ret))
    (local.get $ret))

  ;; args_sizes_get(argc: *u32, argv_buf_size: *u32) -> errno
  (func (export "args_sizes_get") (param $argc i32) (param $size i32) (result i32)
    (local $ret i32) (local $list i32) (local $len i32) (local $i i32) (local $total i32)
    (local.set $ret (call $arguments))
    (local.set $list (i32.load (local.get $ret)))
    (local.set $len (i32.load offset=4 (local.get $ret)))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        ;; each string and its terminating NUL
        (local.set $total
          (i32.add (local.get $total)
            (i32.add (i32.const 1)
              (i32.load offset=4
                (i32.add (local.get $list) (i32.shl (local.get $i) (i32.const 3)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (i32.store (local.get $argc) (local.get $len))
    (i32.store (local.get $size) (local.get $total))
    (i32.const 0))

  ;; args_get(argv: **u8, argv_buf: *u8) -> errno: argv[i] points at the i-th NUL-terminated
  ;; argument in argv_buf.
  (func (export "args_get") (param $argv i32) (param $buf i32) (result i32)
    (local $ret i32) (local $list i32) (local $len i32) (local $i i32)
    (local $elem i32) (local $n i32)
    (local.set $ret (call $arguments))
    (local.set $list (i32.load (local.get $ret)))
    (local.set $len (i32.load offset=4 (local.get $ret)))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $elem (i32.add (local.get $list) (i32.shl (local.get $i) (i32.const 3))))
        (local.set $n (i32.load offset=4 (local.get $elem)))
        (i32.store (i32.add (local.get $argv) (i32.shl (local.get $i) (i32.const 2)))
          (local.get $buf))
        (memory.copy (local.get $buf) (i32.load (local.get $elem)) (local.get $n))
        (i32.store8 (i32.add (local.get $buf) (local.get $n)) (i32.const 0))
        (local.set $buf (i32.add (local.get $buf) (i32.add (local.get $n) (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (i32.const 0))

  ;; environ_sizes_get(count: *u32, buf_size: *u32) -> errno; each variable is `KEY=VALUE\0`.
  (func (export "environ_sizes_get") (param $count i32) (param $size i32) (result i32)
    (local $ret i32) (local $list i32) (local $len i32) (local $i i32) (local $total i32)
    (local $elem i32)
    (local.set $ret (call $environment))
    (local.set $list (i32.load (local.get $ret)))
    (local.set $len (i32.load offset=4 (local.get $ret)))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        ;; an element is (key ptr, key len, value ptr, value len)
        (local.set $elem (i32.add (local.get $list) (i32.shl (local.get $i) (i32.const 4))))
        (local.set $total
          (i32.add (local.get $total)
            (i32.add (i32.const 2)
              (i32.add (i32.load offset=4 (local.get $elem))
                (i32.load offset=12 (local.get $elem))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (i32.store (local.get $count) (local.get $len))
    (i32.store (local.get $size) (local.get $total))
    (i32.const 0))

  ;; environ_get(environ: **u8, environ_buf: *u8) -> errno
  (func (export "environ_get") (param $environ i32) (param $buf i32) (result i32)
    (local $ret i32) (local $list i32) (local $len i32) (local $i i32)
    (local $elem i32) (local $n i32)
    (local.set $ret (call $environment))
    (local.set $list (i32.load (local.get $ret)))
    (local.set $len (i32.load offset=4 (local.get $ret)))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $elem (i32.add (local.get $list) (i32.shl (local.get $i) (i32.const 4))))
        (i32.store (i32.add (local.get $environ) (i32.shl (local.get $i) (i32.const 2)))
          (local.get $buf))
        (local.set $n (i32.load offset=4 (local.get $elem)))
        (memory.copy (local.get $buf) (i32.load (local.get $elem)) (local.get $n))
        (local.set $buf (i32.add (local.get $buf) (local.get $n)))
        (i32.store8 (local.get $buf) (i32.const 61)) ;; '='
        (local.set $buf (i32.add (local.get $buf) (i32.const 1)))
        (local.set $n (i32.load offset=12 (local.get $elem)))
        (memory.copy (local.get $buf) (i32.load offset=8 (local.get $elem)) (local.get $n))
        (local.set $buf (i32.add (local.get $buf) (local.get $n)))
        (i32.store8 (local.get $buf) (i32.const 0))
        (local.set $buf (i32.add (local.get $buf) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (i32.const 0))

  ;; proc_exit(rval: u32): the code reaches the host as it is; codes above 255, which no
  ;; process exit status can carry, are reported as 255 so that a failure stays a failure.
  (func (export "proc_exit") (param $code i32)
    (if (i32.gt_u (local.get $code) (i32.const 255))
      (then (local.set $code (i32.const 255))))
    (call $exit_with_code (local.get $code))
    unreachable)
)
