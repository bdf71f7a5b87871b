//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// A deterministic pseudo-random byte stream of a given length, generated on the fly.
pub struct Noise {
    state: u64,
    left: u64,
}

impl Noise {
    pub fn new(seed: u64, len: u64) -> Self {
        Noise {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            left: len,
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        let n = n - n % 8.min(n.max(1)); // whole words when possible
        let n = if n == 0 {
            (self.left as usize).min(buf.len())
        } else {
            n
        };
        let mut i = 0;
        while i < n {
            let w = self.next().to_le_bytes();
            let k = (n - i).min(8);
            buf[i..i + k].copy_from_slice(&w[..k]);
            i += k;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Streams a reader through SHA-256, returning (hex hash, length).
pub fn hash_reader(mut r: impl Read) -> (String, u64) {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    (hex::encode(h.finalize()), total)
}
