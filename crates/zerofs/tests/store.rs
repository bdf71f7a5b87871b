mod common;

use std::io::{Read, Seek, SeekFrom};

use common::{Noise, hash_reader};
use zerofs::{EntryKind, Error, Quota, QuotaKind, Usage, WriteOptions, ZeroFs};

fn store() -> (tempfile::TempDir, ZeroFs) {
    let dir = tempfile::tempdir().unwrap();
    let fs = ZeroFs::open(dir.path(), Quota::UNLIMITED).unwrap();
    (dir, fs)
}

fn blob_count(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("blobs"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file())
        .count()
}

fn tmp_count(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("blobs/tmp")).unwrap().count()
}

fn read_all(fs: &ZeroFs, t: &str, p: &str) -> Vec<u8> {
    let mut v = Vec::new();
    fs.open_read(t, p).unwrap().read_to_end(&mut v).unwrap();
    v
}

#[test]
fn multi_mib_stream_round_trip() {
    let (_d, fs) = store();
    let len = 24 * 1024 * 1024 + 12345;
    let (want, _) = hash_reader(Noise::new(7, len));
    let e = fs.write("acme", "/big.bin", Noise::new(7, len)).unwrap();
    assert_eq!(e.size, len);
    assert_eq!(e.hash.unwrap().to_hex(), want);
    let (got, got_len) = hash_reader(fs.open_read("acme", "/big.bin").unwrap());
    assert_eq!((got, got_len), (want, len));

    // Seek and ranges agree with the generated stream.
    let mut expect = vec![0u8; 100];
    let mut n = Noise::new(7, len);
    std::io::copy(&mut (&mut n).take(5_000_000), &mut std::io::sink()).unwrap();
    n.read_exact(&mut expect).unwrap();
    assert_eq!(
        fs.read_range("acme", "/big.bin", 5_000_000, 100).unwrap(),
        expect
    );
    let mut r = fs.open_read("acme", "/big.bin").unwrap();
    r.seek(SeekFrom::Start(5_000_000)).unwrap();
    let mut got = vec![0u8; 100];
    r.read_exact(&mut got).unwrap();
    assert_eq!(got, expect);
    assert_eq!(
        fs.read_range("acme", "/big.bin", len - 3, 100)
            .unwrap()
            .len(),
        3
    );
    assert!(
        fs.read_range("acme", "/big.bin", len + 10, 100)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn write_read_stat_list_and_errors() {
    let (_d, fs) = store();
    let e = fs.write("t", "/hello.txt", &b"hello"[..]).unwrap();
    assert_eq!(e.kind, EntryKind::File);
    assert_eq!(e.path.as_str(), "/hello.txt");
    assert!(e.mtime_ns > 0);
    assert_eq!(read_all(&fs, "t", "/./x/../hello.txt"), b"hello");
    assert_eq!(fs.stat("t", "/hello.txt").unwrap(), e);

    match fs.write("t", "/missing/dir/f", &b"x"[..]) {
        Err(Error::NotFound(p)) => assert_eq!(p, "/missing"),
        other => panic!("{other:?}"),
    }
    let err = fs
        .write("t", "/missing/dir/f", &b"x"[..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("/missing"), "{err}");
    fs.write_with(
        "t",
        "/a/b/c.txt",
        &b"abc"[..],
        WriteOptions {
            create_parents: true,
        },
    )
    .unwrap();
    assert_eq!(fs.stat("t", "/a/b").unwrap().kind, EntryKind::Dir);
    assert!(
        matches!(fs.write("t", "/hello.txt/x", &b""[..]), Err(Error::NotADirectory(p)) if p == "/hello.txt")
    );
    assert!(matches!(
        fs.write("t", "/a", &b""[..]),
        Err(Error::IsADirectory(_))
    ));
    assert!(matches!(
        fs.write("t", "/", &b""[..]),
        Err(Error::IsADirectory(_))
    ));
    assert!(matches!(
        fs.open_read("t", "/a"),
        Err(Error::IsADirectory(_))
    ));
    assert!(matches!(
        fs.open_read("t", "/nope"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        fs.list("t", "/hello.txt"),
        Err(Error::NotADirectory(_))
    ));
    assert!(matches!(
        fs.stat("t", "/../x"),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        fs.stat("T", "/x"),
        Err(Error::InvalidTenant { .. })
    ));

    let names: Vec<_> = fs
        .list("t", "/")
        .unwrap()
        .into_iter()
        .map(|e| e.path.to_string())
        .collect();
    assert_eq!(names, ["/a", "/hello.txt"]);
    assert_eq!(fs.list("t", "/a/b").unwrap()[0].path.as_str(), "/a/b/c.txt");
    assert_eq!(fs.usage("t").unwrap(), Usage { bytes: 8, files: 4 });

    // Overwrite replaces content and usage, and frees the old blob.
    fs.write("t", "/hello.txt", &b"hi"[..]).unwrap();
    assert_eq!(read_all(&fs, "t", "/hello.txt"), b"hi");
    assert_eq!(fs.usage("t").unwrap(), Usage { bytes: 5, files: 4 });
    assert_eq!(blob_count(_d.path()), 2);

    // Empty file.
    fs.write("t", "/empty", &b""[..]).unwrap();
    assert!(read_all(&fs, "t", "/empty").is_empty());
}

#[test]
fn dedupe_and_gc() {
    let (d, fs) = store();
    fs.write("a", "/x", Noise::new(1, 100_000)).unwrap();
    fs.write("a", "/y", Noise::new(1, 100_000)).unwrap();
    fs.write("b", "/z", Noise::new(1, 100_000)).unwrap();
    assert_eq!(blob_count(d.path()), 1);
    assert_eq!(fs.usage("a").unwrap().bytes, 200_000);
    fs.remove("a", "/x").unwrap();
    fs.remove("a", "/y").unwrap();
    assert_eq!(blob_count(d.path()), 1);
    fs.remove("b", "/z").unwrap();
    assert_eq!(blob_count(d.path()), 0);

    // Orphans and temp files a crash could leave are collected.
    std::fs::write(d.path().join("blobs").join("ab".repeat(32)), b"orphan").unwrap();
    std::fs::write(d.path().join("blobs/tmp/123-4"), b"partial").unwrap();
    let r = fs.gc().unwrap();
    assert_eq!((r.blobs_removed, r.tmp_removed, r.bytes_freed), (1, 1, 6));
    assert_eq!(blob_count(d.path()) + tmp_count(d.path()), 0);
}

#[test]
fn byte_quota_refuses_mid_stream_and_leaves_nothing() {
    let (d, fs) = store();
    fs.set_quota(
        "q",
        Quota {
            max_bytes: 1_000_000,
            max_files: 100,
        },
    )
    .unwrap();
    fs.write("q", "/small", Noise::new(2, 400_000)).unwrap();

    /// Fails the test if the store reads far past the quota.
    struct Watch(Noise, u64);
    impl Read for Watch {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(b)?;
            self.1 += n as u64;
            assert!(self.1 < 2_000_000, "kept reading after passing the quota");
            Ok(n)
        }
    }
    let err = fs
        .write("q", "/big", Watch(Noise::new(3, 50_000_000), 0))
        .unwrap_err();
    assert!(
        matches!(&err, Error::QuotaExceeded { tenant, limit: 1_000_000, kind: QuotaKind::Bytes } if tenant == "q"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("quota exceeded for tenant q"),
        "{err}"
    );
    assert!(!fs.exists("q", "/big").unwrap());
    assert_eq!(
        fs.usage("q").unwrap(),
        Usage {
            bytes: 400_000,
            files: 1
        }
    );
    assert_eq!((blob_count(d.path()), tmp_count(d.path())), (1, 0));

    // Overwriting counts the replaced size as free.
    fs.write("q", "/small", Noise::new(4, 1_000_000)).unwrap();
    assert_eq!(fs.usage("q").unwrap().bytes, 1_000_000);
    assert!(fs.write("q", "/one-more", &b"x"[..]).is_err());
    // Other tenants are not affected.
    fs.write("other", "/big", Noise::new(3, 2_000_000)).unwrap();
}

#[test]
fn file_quota_counts_files_and_dirs() {
    let (_d, fs) = store();
    fs.set_quota(
        "q",
        Quota {
            max_bytes: u64::MAX,
            max_files: 3,
        },
    )
    .unwrap();
    assert_eq!(fs.quota("q").unwrap().max_files, 3);
    fs.mkdir("q", "/d", false).unwrap();
    fs.write("q", "/d/1", &b"1"[..]).unwrap();
    // create_parents would need two more entries.
    let err = fs
        .write_with(
            "q",
            "/e/2",
            &b"2"[..],
            WriteOptions {
                create_parents: true,
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::QuotaExceeded {
                kind: QuotaKind::Files,
                limit: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!fs.exists("q", "/e").unwrap());
    fs.write("q", "/d/2", &b"2"[..]).unwrap();
    assert!(matches!(
        fs.write("q", "/d/3", &b"3"[..]),
        Err(Error::QuotaExceeded {
            kind: QuotaKind::Files,
            ..
        })
    ));
    assert!(matches!(
        fs.mkdir("q", "/x", false),
        Err(Error::QuotaExceeded {
            kind: QuotaKind::Files,
            ..
        })
    ));
    // Overwrites do not need a new entry.
    fs.write("q", "/d/2", &b"22"[..]).unwrap();
    assert_eq!(fs.usage("q").unwrap(), Usage { bytes: 3, files: 3 });
    fs.remove("q", "/d/1").unwrap();
    fs.write("q", "/d/3", &b"3"[..]).unwrap();
}

#[test]
fn mkdir_remove_and_remove_all() {
    let (d, fs) = store();
    fs.mkdir("t", "/a", false).unwrap();
    assert!(matches!(
        fs.mkdir("t", "/a", false),
        Err(Error::AlreadyExists(_))
    ));
    fs.mkdir("t", "/a", true).unwrap();
    assert!(matches!(fs.mkdir("t", "/x/y", false), Err(Error::NotFound(p)) if p == "/x"));
    fs.mkdir("t", "/x/y/z", true).unwrap();
    fs.write("t", "/x/y/f", &b"f"[..]).unwrap();
    fs.write("t", "/x/g", &b"gg"[..]).unwrap();
    fs.write("t", "/x!", &b"sibling"[..]).unwrap();
    fs.mkdir("t", "/x0", false).unwrap();
    assert!(matches!(
        fs.remove("t", "/x"),
        Err(Error::DirectoryNotEmpty(_))
    ));
    assert!(matches!(
        fs.remove("t", "/"),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(fs.remove("t", "/nope"), Err(Error::NotFound(_))));
    fs.remove("t", "/x/y/z").unwrap();
    fs.remove_all("t", "/x").unwrap();
    assert!(!fs.exists("t", "/x/y/f").unwrap());
    assert!(!fs.exists("t", "/x").unwrap());
    assert!(fs.exists("t", "/x!").unwrap());
    assert!(fs.exists("t", "/x0").unwrap());
    assert_eq!(fs.usage("t").unwrap(), Usage { bytes: 7, files: 3 });
    assert_eq!(blob_count(d.path()), 1);
    fs.remove("t", "/x!").unwrap();
    fs.remove("t", "/a").unwrap();
}

#[test]
fn rename_semantics() {
    let (_d, fs) = store();
    let opts = WriteOptions {
        create_parents: true,
    };
    fs.write_with("t", "/src/a/f1", &b"1"[..], opts).unwrap();
    fs.write_with("t", "/src/a/b/f2", &b"22"[..], opts).unwrap();
    fs.write("t", "/src/top", &b"top"[..]).unwrap();
    fs.write("t", "/src-sibling", &b"s"[..]).unwrap();
    let before = fs.usage("t").unwrap();

    // Directory move carries the whole subtree.
    fs.rename("t", "/src", "/dst").unwrap();
    assert!(!fs.exists("t", "/src").unwrap());
    assert_eq!(read_all(&fs, "t", "/dst/a/b/f2"), b"22");
    assert_eq!(read_all(&fs, "t", "/dst/a/f1"), b"1");
    assert_eq!(read_all(&fs, "t", "/dst/top"), b"top");
    assert_eq!(read_all(&fs, "t", "/src-sibling"), b"s");
    assert_eq!(fs.usage("t").unwrap(), before);

    // Into itself.
    let err = fs.rename("t", "/dst", "/dst/a/inner").unwrap_err();
    assert!(
        matches!(&err, Error::InvalidPath { reason, .. } if reason.contains("into itself")),
        "{err:?}"
    );
    // Missing source / parent.
    assert!(matches!(
        fs.rename("t", "/nope", "/x"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(fs.rename("t", "/dst/top", "/no/x"), Err(Error::NotFound(p)) if p == "/no"));
    // File replaces file (usage shrinks, replaced blob is freed).
    fs.rename("t", "/dst/top", "/src-sibling").unwrap();
    assert_eq!(read_all(&fs, "t", "/src-sibling"), b"top");
    assert_eq!(
        fs.usage("t").unwrap(),
        Usage {
            bytes: before.bytes - 1,
            files: before.files - 1
        }
    );
    // Kind mismatches.
    fs.mkdir("t", "/emptydir", false).unwrap();
    assert!(matches!(
        fs.rename("t", "/src-sibling", "/dst"),
        Err(Error::IsADirectory(_))
    ));
    assert!(matches!(
        fs.rename("t", "/dst", "/src-sibling"),
        Err(Error::NotADirectory(_))
    ));
    assert!(matches!(
        fs.rename("t", "/emptydir", "/dst"),
        Err(Error::DirectoryNotEmpty(_))
    ));
    // Directory replaces an empty directory.
    fs.rename("t", "/dst", "/emptydir").unwrap();
    assert_eq!(read_all(&fs, "t", "/emptydir/a/f1"), b"1");
    // Same path is a no-op; root is refused.
    fs.rename("t", "/emptydir", "/emptydir/.").unwrap();
    assert!(matches!(
        fs.rename("t", "/", "/x"),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        fs.rename("t", "/emptydir", "/"),
        Err(Error::InvalidPath { .. })
    ));
}

#[test]
fn tenants_are_isolated() {
    let (_d, fs) = store();
    fs.write("a", "/secret", &b"a's data"[..]).unwrap();
    fs.mkdir("a", "/dir", false).unwrap();
    for p in [
        "/secret",
        "/../a/secret",
        "/a/secret",
        "/../../a/secret",
        "/./secret/..",
        "/dir",
    ] {
        match fs.stat("b", p) {
            Err(Error::NotFound(_)) | Err(Error::InvalidPath { .. }) => {}
            Ok(e) if e.path.is_root() => {}
            other => panic!("{p}: {other:?}"),
        }
        assert!(fs.open_read("b", p).is_err(), "{p}");
    }
    for t in ["a/..", "../a", "a/", "b/../a", "", "A"] {
        assert!(
            matches!(fs.stat(t, "/secret"), Err(Error::InvalidTenant { .. })),
            "{t}"
        );
    }
    assert!(fs.list("b", "/").unwrap().is_empty());
    assert!(matches!(
        fs.rename("b", "/secret", "/mine"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(fs.remove("b", "/secret"), Err(Error::NotFound(_))));
    assert_eq!(fs.usage("b").unwrap(), Usage::default());
    // A tenant whose name is a prefix of another's.
    fs.write("a2", "/secret", &b"other"[..]).unwrap();
    assert_eq!(read_all(&fs, "a", "/secret"), b"a's data");
    assert_eq!(fs.list("a", "/").unwrap().len(), 2);
}

#[test]
fn reopen_finds_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let fs = ZeroFs::open(dir.path(), Quota::UNLIMITED).unwrap();
        fs.set_quota(
            "t",
            Quota {
                max_bytes: 10_000_000,
                max_files: 10,
            },
        )
        .unwrap();
        fs.write_with(
            "t",
            "/d/f",
            Noise::new(9, 300_000),
            WriteOptions {
                create_parents: true,
            },
        )
        .unwrap();
        // A second open while this one is alive is refused.
        assert!(ZeroFs::open(dir.path(), Quota::UNLIMITED).is_err());
    }
    let fs = ZeroFs::open(dir.path(), Quota::UNLIMITED).unwrap();
    assert_eq!(
        hash_reader(fs.open_read("t", "/d/f").unwrap()),
        hash_reader(Noise::new(9, 300_000))
    );
    assert_eq!(
        fs.usage("t").unwrap(),
        Usage {
            bytes: 300_000,
            files: 2
        }
    );
    assert_eq!(fs.quota("t").unwrap().max_files, 10);
    assert_eq!(fs.gc().unwrap().blobs_removed, 0);
}

/// Measures streamed write/read throughput of a 64 MiB file:
/// `cargo test --release --test store -- --ignored --nocapture throughput`.
#[test]
#[ignore = "benchmark, not a check: prints figures; run in release with --ignored"]
fn throughput_64mib() {
    let (_d, fs) = store();
    let len = 64 * 1024 * 1024;
    let t = std::time::Instant::now();
    fs.write("t", "/big", Noise::new(5, len)).unwrap();
    let w = t.elapsed();
    let t = std::time::Instant::now();
    let mut r = fs.open_read("t", "/big").unwrap();
    std::io::copy(&mut r, &mut std::io::sink()).unwrap();
    let rd = t.elapsed();
    let mib = (len / (1024 * 1024)) as f64;
    println!(
        "write {:.0} MiB/s ({w:?}), read {:.0} MiB/s ({rd:?})",
        mib / w.as_secs_f64(),
        mib / rd.as_secs_f64()
    );
}

#[test]
fn staged_writes_of_a_tenant_share_one_reservation_of_its_quota() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let fs = ZeroFs::open(
        dir.path(),
        Quota {
            max_bytes: 10 << 20,
            max_files: 100,
        },
    )
    .unwrap();
    fs.write("acme", "/old.bin", &[7u8; 1 << 20][..]).unwrap();
    // Three staged writes: together they may hold what the quota leaves (9 MiB), plus the
    // size of the file each replaces.
    let mut a = fs.stage("acme").unwrap();
    let mut b = fs.stage("acme").unwrap();
    let mut c = fs.stage("acme").unwrap();
    fs.reserve(&mut a, "/a.bin", 4 << 20).unwrap();
    fs.reserve(&mut b, "/b.bin", 4 << 20).unwrap();
    let err = fs.reserve(&mut c, "/c.bin", 2 << 20).unwrap_err();
    assert!(
        matches!(
            err,
            Error::QuotaExceeded {
                kind: QuotaKind::Bytes,
                ..
            }
        ),
        "{err}"
    );
    // Replacing /old.bin counts its size as free.
    fs.reserve(&mut c, "/old.bin", 2 << 20).unwrap();
    assert_eq!(fs.staged_bytes("acme"), 10 << 20);
    // Another tenant is not affected.
    let mut other = fs.stage("beta").unwrap();
    fs.reserve(&mut other, "/x", 9 << 20).unwrap();
    drop(other);
    // Dropping a staged write aborts it: its file goes and its reservation returns.
    drop(b);
    assert_eq!(fs.staged_bytes("acme"), 6 << 20);
    let mut d = fs.stage("acme").unwrap();
    fs.reserve(&mut d, "/d.bin", 3 << 20).unwrap();
    // Publishing returns the reservation once the usage counts the file.
    a.file().write_all_at(&[1u8; 4 << 20], 0).unwrap();
    let e = fs
        .publish(a, "/a.bin", WriteOptions::default(), None)
        .unwrap();
    assert_eq!(e.size, 4 << 20);
    assert_eq!(read_all(&fs, "acme", "/a.bin"), vec![1u8; 4 << 20]);
    assert_eq!(fs.staged_bytes("acme"), 5 << 20);
    assert_eq!(fs.usage("acme").unwrap().bytes, 5 << 20);
    drop((c, d));
    assert_eq!(fs.staged_bytes("acme"), 0);
    assert_eq!(tmp_count(dir.path()), 0, "aborted writes leave no file");
}

#[test]
fn a_publish_past_its_deadline_changes_nothing() {
    use std::os::unix::fs::FileExt;
    let (dir, fs) = store();
    fs.write("acme", "/f", &b"old"[..]).unwrap();
    let mut s = fs.stage("acme").unwrap();
    fs.reserve(&mut s, "/f", 3).unwrap();
    s.file().write_all_at(b"new", 0).unwrap();
    let past = std::time::Instant::now();
    let err = fs
        .publish(s, "/f", WriteOptions::default(), Some(past))
        .unwrap_err();
    assert!(matches!(err, Error::TimedOut(_)), "{err}");
    assert!(err.to_string().contains("publishing /f"), "{err}");
    assert_eq!(read_all(&fs, "acme", "/f"), b"old");
    assert_eq!(fs.staged_bytes("acme"), 0);
    assert_eq!(tmp_count(dir.path()), 0);
}
