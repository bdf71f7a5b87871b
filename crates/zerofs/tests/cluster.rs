//! zerofs in the cluster log, end to end: three real zeroraft nodes in one process, each with
//! its own peer listener on loopback, its own raft.redb and its own zerofs store (meta.redb
//! plus blob files) in a temporary directory. Writes go through the leader's store; blobs
//! travel on the mutual-TLS peer channel.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use zero_auth::Keypair;
use zerofs::replica::{FsBlobStore, FsMachine, RaftBlobPeers, RaftReplicator};
use zerofs::{BlobHash, Error, Quota, WriteOptions, ZeroFs};
use zeroraft::blobs::{BlobClient, BlobRefusal, BlobService, BlobStore, OpenBlob};
use zeroraft::peer::{PeerChannel, Peers};
use zeroraft::{NodeConfig, RaftNode, Timing};

/// Generous bounds for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);
/// The largest blob a node accepts from a peer in these tests.
const MAX_BLOB: u64 = 4 << 20;

type Node = Arc<RaftNode<FsMachine>>;

/// A node's blob service that serves wrong bytes (of the right length) for every blob: a
/// delegated node gone bad. Pushes to it are stored honestly.
struct Liar {
    inner: FsBlobStore,
    served: AtomicU64,
}

impl BlobStore for Liar {
    fn max_blob_bytes(&self) -> u64 {
        self.inner.max_blob_bytes()
    }

    fn receive(
        &self,
        hash: [u8; 32],
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), BlobRefusal> {
        self.inner.receive(hash, size, content)
    }

    fn open(&self, hash: [u8; 32]) -> Result<Option<OpenBlob>, String> {
        let Some((size, _)) = self.inner.open(hash)? else {
            return Ok(None);
        };
        self.served.fetch_add(1, Ordering::Relaxed);
        Ok(Some((size, Box::new(std::io::repeat(0x5a).take(size)))))
    }
}

struct Cluster {
    root: tempfile::TempDir,
    keys: Vec<Keypair>,
    peers: Arc<Peers>,
    addrs: Vec<Option<SocketAddr>>,
    liar: Option<Arc<Liar>>,
}

struct Running {
    raft: Node,
    fs: Arc<ZeroFs>,
}

fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u64)
                .wrapping_mul(2654435761)
                .wrapping_add(seed as u64) as u8
        })
        .collect()
}

impl Cluster {
    fn new() -> Cluster {
        let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate().unwrap()).collect();
        let peers = Peers::new(keys.iter().map(|k| k.did().clone()));
        Cluster {
            root: tempfile::tempdir().unwrap(),
            keys,
            peers,
            addrs: vec![None; 3],
            liar: None,
        }
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("node{id}"))
    }

    fn blob_file(&self, id: u64, hash: BlobHash) -> PathBuf {
        self.dir(id).join("fs/blobs").join(hash.to_hex())
    }

    /// Starts node `id` (on its previous address after a restart); node 1 serves wrong bytes
    /// when `liar` is set.
    async fn start(&mut self, id: u64, liar: bool) -> Running {
        let fs = Arc::new(ZeroFs::open(self.dir(id).join("fs"), Quota::UNLIMITED).unwrap());
        let listen = self.addrs[(id - 1) as usize].unwrap_or("127.0.0.1:0".parse().unwrap());
        let key = self.keys[(id - 1) as usize].clone();
        let mut config = NodeConfig::new(
            id,
            key.clone(),
            listen,
            self.dir(id).join("raft"),
            self.peers.clone(),
        );
        config.timing = Timing {
            heartbeat: Duration::from_millis(150),
            election_min: Duration::from_millis(1000),
            election_max: Duration::from_millis(2000),
        };
        let honest = FsBlobStore::new(fs.clone(), MAX_BLOB);
        config.blobs = Some(if liar {
            let liar = Arc::new(Liar {
                inner: honest,
                served: AtomicU64::new(0),
            });
            self.liar = Some(liar.clone());
            BlobService(liar)
        } else {
            BlobService(Arc::new(honest))
        });
        let raft = Arc::new(
            RaftNode::start(config, FsMachine::new(fs.clone()))
                .await
                .unwrap(),
        );
        self.addrs[(id - 1) as usize] = Some(raft.local_addr());
        let channel = PeerChannel::new(&key, self.peers.clone()).unwrap();
        let client = BlobClient::new(channel, Duration::from_secs(5), WAIT);
        fs.set_blob_peers(Some(Arc::new(RaftBlobPeers::new(
            &raft,
            client,
            Handle::current(),
        ))));
        fs.set_replicator(Some(Arc::new(RaftReplicator::new(
            &raft,
            Handle::current(),
            |c| c,
        ))));
        Running { raft, fs }
    }
}

async fn stop(node: Running) {
    node.fs.set_replicator(None);
    node.fs.set_blob_peers(None);
    let deadline = Instant::now() + WAIT;
    let mut raft = node.raft;
    let raft = loop {
        match Arc::try_unwrap(raft) {
            Ok(r) => break r,
            Err(back) => {
                assert!(Instant::now() < deadline, "the node is still in use");
                raft = back;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    raft.shutdown().await.unwrap();
}

/// Runs a blocking store call off the runtime's workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn write(
    fs: &Arc<ZeroFs>,
    tenant: &str,
    path: &str,
    bytes: Vec<u8>,
) -> zerofs::Result<zerofs::Entry> {
    let fs = fs.clone();
    let (tenant, path) = (tenant.to_string(), path.to_string());
    blocking(move || {
        fs.write_with(
            &tenant,
            &path,
            &bytes[..],
            WriteOptions {
                create_parents: true,
            },
        )
    })
    .await
}

async fn read(fs: &Arc<ZeroFs>, tenant: &str, path: &str) -> zerofs::Result<Vec<u8>> {
    let fs = fs.clone();
    let (tenant, path) = (tenant.to_string(), path.to_string());
    blocking(move || {
        let mut r = fs.open_read(&tenant, &path)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|source| Error::Io {
            context: "reading".to_string(),
            source,
        })?;
        Ok(out)
    })
    .await
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn form(cluster: &mut Cluster) -> Vec<Running> {
    let n1 = cluster.start(1, true).await;
    let n2 = cluster.start(2, false).await;
    let n3 = cluster.start(3, false).await;
    n1.raft.initialize().await.unwrap();
    n1.raft.wait_for_leader(WAIT).await.unwrap();
    for n in [&n2, &n3] {
        n1.raft
            .add_learner(n.raft.id(), n.raft.member().clone(), WAIT)
            .await
            .unwrap();
    }
    n1.raft
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await
        .unwrap();
    vec![n1, n2, n3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_replicate_blobs_are_fetched_verified_and_a_down_node_catches_up() {
    let mut cluster = Cluster::new();
    let mut nodes = form(&mut cluster).await;

    // A file written through the leader is byte-identical on both followers.
    let one = content(1, (1 << 20) + 12345);
    let entry = write(&nodes[0].fs, "acme", "/site/index.html", one.clone())
        .await
        .unwrap();
    for n in &nodes[1..] {
        let fs = n.fs.clone();
        wait_for("the write to be applied", || {
            fs.exists("acme", "/site/index.html").unwrap()
        })
        .await;
        // The blob was pushed before the command was proposed: no fetch was needed.
        assert!(
            cluster
                .blob_file(n.raft.id(), entry.hash.unwrap())
                .is_file()
        );
        assert_eq!(read(&n.fs, "acme", "/site/index.html").await.unwrap(), one);
        assert_eq!(
            n.fs.stat("acme", "/site/index.html").unwrap().mtime_ns,
            entry.mtime_ns,
            "the mtime is the proposer's, not the applier's"
        );
    }

    // Refusals come back as the same errors, and change nothing anywhere.
    let e = blocking({
        let fs = nodes[0].fs.clone();
        move || fs.mkdir("acme", "/site", false)
    })
    .await
    .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    blocking({
        let fs = nodes[0].fs.clone();
        move || {
            fs.set_quota(
                "acme",
                Quota {
                    max_bytes: 2 << 20,
                    max_files: 100,
                },
            )
        }
    })
    .await
    .unwrap();
    let e = write(&nodes[0].fs, "acme", "/big.bin", content(2, 1 << 20))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::QuotaExceeded { .. }), "{e}");
    for n in &nodes {
        assert!(!n.fs.exists("acme", "/big.bin").unwrap());
    }

    // Node 3 goes down; writes go on with a majority (nodes 1 and 2).
    let n3 = nodes.pop().unwrap();
    stop(n3).await;
    let two = content(3, 300_000);
    let entry2 = write(&nodes[0].fs, "acme", "/site/app.wasm", two.clone())
        .await
        .unwrap();
    let hash2 = entry2.hash.unwrap();
    blocking({
        let fs = nodes[0].fs.clone();
        move || fs.rename("acme", "/site/index.html", "/site/home.html")
    })
    .await
    .unwrap();

    // It comes back and catches up from the log; the blob it missed is fetched by hash.
    // Node 1 (tried first) serves wrong bytes: they are rejected, node 2's are taken.
    let n3 = cluster.start(3, false).await;
    let fs3 = n3.fs.clone();
    wait_for("node 3 to catch up", || {
        fs3.exists("acme", "/site/home.html").unwrap()
    })
    .await;
    assert!(!fs3.exists("acme", "/site/index.html").unwrap());
    assert!(fs3.exists("acme", "/site/app.wasm").unwrap());
    assert!(!cluster.blob_file(3, hash2).is_file(), "the push missed it");
    assert_eq!(
        fs3.missing_blobs().unwrap(),
        vec![(hash2, two.len() as u64)]
    );
    let report = blocking({
        let fs = fs3.clone();
        move || fs.fetch_missing()
    })
    .await
    .unwrap();
    assert_eq!(report.fetched, 1, "{report:?}");
    assert!(report.missing.is_empty(), "{report:?}");
    assert!(
        report.rejected.iter().any(|r| r.contains("do not hash")),
        "node 1's wrong bytes were rejected: {report:?}"
    );
    assert!(
        cluster
            .liar
            .as_ref()
            .unwrap()
            .served
            .load(Ordering::Relaxed)
            >= 1
    );
    assert_eq!(read(&fs3, "acme", "/site/app.wasm").await.unwrap(), two);
    assert_eq!(read(&fs3, "acme", "/site/home.html").await.unwrap(), one);

    // When the only reachable source serves wrong bytes, a read fails: never other bytes.
    std::fs::remove_file(cluster.blob_file(3, hash2)).unwrap();
    let n2 = nodes.pop().unwrap();
    stop(n2).await;
    let e = read(&fs3, "acme", "/site/app.wasm").await.unwrap_err();
    assert!(
        e.to_string().contains("do not hash"),
        "the wrong bytes are refused: {e}"
    );
    assert!(!cluster.blob_file(3, hash2).is_file());
    stop(n3).await;
    stop(nodes.pop().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushed_blobs_are_verified_bounded_and_only_from_delegated_nodes() {
    let mut cluster = Cluster::new();
    let n2 = cluster.start(2, false).await;
    let target = n2.raft.member().clone();

    // A delegated node (node 3's key) pushing bytes that do not match their hash: refused.
    let channel = PeerChannel::new(&cluster.keys[2], cluster.peers.clone()).unwrap();
    let client = BlobClient::new(channel, Duration::from_secs(5), WAIT);
    let real = content(9, 10_000);
    let claimed: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(b"something else").into()
    };
    let e = client
        .push(
            &target,
            claimed,
            real.len() as u64,
            Box::new(std::io::Cursor::new(real.clone())),
        )
        .await
        .unwrap_err();
    assert!(e.contains("422"), "{e}");
    assert!(!cluster.blob_file(2, BlobHash(claimed)).is_file());

    // Right bytes, announced shorter than they are: refused too.
    let hash: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(&real).into()
    };
    let e = client
        .push(
            &target,
            hash,
            100,
            Box::new(std::io::Cursor::new(real.clone())),
        )
        .await
        .unwrap_err();
    assert!(!cluster.blob_file(2, BlobHash(hash)).is_file(), "{e}");

    // Over the size bound: refused before any byte is stored.
    let e = client
        .push(
            &target,
            hash,
            MAX_BLOB + 1,
            Box::new(std::io::repeat(0).take(MAX_BLOB + 1)),
        )
        .await
        .unwrap_err();
    // The receiver answers 413 before reading the body and closes; a client still writing
    // the body may see the close (a write error) before it reads the answer. Either way
    // nothing is stored.
    assert!(
        e.contains("413") || e.contains("error writing a body"),
        "{e}"
    );
    assert!(!cluster.blob_file(2, BlobHash(hash)).is_file(), "{e}");

    // The honest push is stored, and can be fetched back, verified by the fetcher.
    client
        .push(
            &target,
            hash,
            real.len() as u64,
            Box::new(std::io::Cursor::new(real.clone())),
        )
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(cluster.blob_file(2, BlobHash(hash))).unwrap(),
        real
    );
    let mut back = Vec::new();
    client
        .fetch(&target, hash, real.len() as u64, &mut |c| {
            back.extend_from_slice(c);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(back, real);

    // A process without a delegation (a key outside the allowed set) is refused at the
    // handshake, for pushes and fetches alike.
    let stranger = Keypair::generate().unwrap();
    let strangers = Peers::new([stranger.did().clone(), cluster.keys[1].did().clone()]);
    let outsider = BlobClient::new(
        PeerChannel::new(&stranger, strangers).unwrap(),
        Duration::from_secs(5),
        WAIT,
    );
    let other = content(10, 5_000);
    let other_hash: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(&other).into()
    };
    let refused = outsider
        .push(
            &target,
            other_hash,
            other.len() as u64,
            Box::new(std::io::Cursor::new(other.clone())),
        )
        .await;
    assert!(refused.is_err(), "a push without a delegation is refused");
    assert!(!cluster.blob_file(2, BlobHash(other_hash)).is_file());
    let mut leaked = Vec::new();
    let refused = outsider
        .fetch(&target, hash, real.len() as u64, &mut |c| {
            leaked.extend_from_slice(c);
            Ok(())
        })
        .await;
    assert!(refused.is_err(), "a fetch without a delegation is refused");
    assert!(leaked.is_empty(), "no byte reaches a stranger");
    stop(n2).await;
}
