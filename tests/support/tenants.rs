//! Tenants for end-to-end tests: a node in development mode (its Admin key in the data dir)
//! with tenants `acme` and `beta` and their owners' keys and chains.

use std::path::Path;

use zero_auth::{Delegation, Keypair};
use zero_client::{Client, Grant};

use super::*;

pub fn node_config(data: &Path) -> String {
    format!(
        "[node]\ndata_dir = {:?}\nclock_skew_secs = 0\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n{TEST_LIMITS}\n",
        data.display().to_string()
    )
}

pub struct World {
    pub node: NodeProc,
    pub api: String,
    pub admin: Keypair,
    pub acme_owner: Keypair,
    pub acme_chain: Vec<Delegation>,
    pub beta_owner: Keypair,
    pub beta_chain: Vec<Delegation>,
}

/// A node (development mode: its admin key is in the data dir) with tenants `acme` and `beta`.
pub fn world(name: &str) -> World {
    world_with(name, "")
}

/// [`world`] with `extra` appended to the node's configuration (whole TOML sections).
pub fn world_with(name: &str, extra: &str) -> World {
    world_with_node(name, "", extra)
}

/// [`world_with`], with `node_extra` added to the `[node]` section (`key = value` lines).
pub fn world_with_node(name: &str, node_extra: &str, extra: &str) -> World {
    world_edited(name, |base| {
        let base = base.replacen("[node]\n", &format!("[node]\n{node_extra}\n"), 1);
        format!("{base}\n{extra}\n")
    })
}

/// [`world`] with the node's configuration (from [`node_config`]) rewritten by `edit`.
pub fn world_edited(name: &str, edit: impl FnOnce(String) -> String) -> World {
    let dir = test_dir(name);
    let data = dir.join("data");
    let node = NodeProc::start(&dir, &edit(node_config(&data)));
    let api = format!("http://{}", node.admin);
    node.wait_log("development mode warning", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("DEVELOPMENT MODE"))
    });
    let admin = Keypair::load(data.join("admin.key")).unwrap();
    let acme_owner = Keypair::generate().unwrap();
    let beta_owner = Keypair::generate().unwrap();
    let mut admin_client =
        Client::new(&api, Keypair::load(data.join("admin.key")).unwrap(), vec![]);
    admin_client
        .create_tenant("acme", acme_owner.did())
        .unwrap();
    admin_client
        .create_tenant("beta", beta_owner.did())
        .unwrap();
    let acme_chain =
        vec![zero_client::owner_delegation(&admin, "acme", acme_owner.did(), None).unwrap()];
    let beta_chain =
        vec![zero_client::owner_delegation(&admin, "beta", beta_owner.did(), None).unwrap()];
    World {
        node,
        api,
        admin,
        acme_owner,
        acme_chain,
        beta_owner,
        beta_chain,
    }
}

pub fn grant(cmd: &str, policy: &str, expires_in: Option<u64>) -> Grant {
    Grant {
        command: cmd.into(),
        policy: zero_client::parse_policy(policy).unwrap(),
        expires_in,
    }
}

pub fn signed(w: &World, wasm: &str, g: &Grant) -> Vec<u8> {
    let bytes = std::fs::read(guest_wasm(wasm)).unwrap();
    zero_client::sign_component(&bytes, &w.acme_owner, &w.acme_chain, g).unwrap()
}

pub fn copy_key(k: &Keypair) -> Keypair {
    // Keys are not Clone (their secret is wiped on drop); round-trip through a temp file.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.key");
    k.save(&p).unwrap();
    Keypair::load(&p).unwrap()
}

pub fn refused(r: anyhow::Result<serde_json::Value>) -> zero_client::ApiError {
    let e = r.expect_err("the node must refuse");
    match e.downcast::<zero_client::ApiError>() {
        Ok(api) => api,
        Err(other) => panic!("expected a refusal from the node, got: {other:#}"),
    }
}
