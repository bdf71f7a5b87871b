//! Writes a local file into a zerofs store (creating parent directories), for benchmarks and
//! manual seeding while no node holds the store.
//!
//! Usage: `cargo run --release -p zerofs --example put -- STORE_ROOT TENANT PATH LOCAL_FILE`

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, tenant, path, local] = args.as_slice() else {
        eprintln!(
            "usage: put STORE_ROOT TENANT PATH LOCAL_FILE (e.g. put data/fs acme /site/index.html index.html)"
        );
        return ExitCode::from(2);
    };
    let file = match std::fs::File::open(local) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot open {local}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = zerofs::ZeroFs::open(root, zerofs::Quota::UNLIMITED).and_then(|fs| {
        fs.write_with(
            tenant,
            path,
            std::io::BufReader::new(file),
            zerofs::WriteOptions {
                create_parents: true,
            },
        )
    });
    match result {
        Ok(entry) => {
            println!(
                "{tenant}:{} {} bytes sha256:{}",
                entry.path,
                entry.size,
                entry.hash.map(|h| h.to_hex()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "cannot write {tenant}:{path}: {e} (is a node running on this store? stop it first)"
            );
            ExitCode::FAILURE
        }
    }
}
