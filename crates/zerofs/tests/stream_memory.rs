//! Streaming bound: writing and reading a large file must not allocate anything near its size.
//! (Its own test binary, so that the counting allocator sees only this test.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Noise, hash_reader};
use zerofs::{Quota, ZeroFs};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn large_file_streams_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let fs = ZeroFs::open(dir.path(), Quota::UNLIMITED).unwrap();
    let len = 48 * 1024 * 1024;
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let e = fs.write("t", "/big", Noise::new(11, len)).unwrap();
    let (h, n) = hash_reader(fs.open_read("t", "/big").unwrap());
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert_eq!((h, n), (e.hash.unwrap().to_hex(), len));
    assert!(
        peak < 8 * 1024 * 1024,
        "peak heap growth {peak} bytes for a {len}-byte file"
    );
    eprintln!("peak heap growth while streaming {len} bytes: {peak} bytes");
}
