//! The management state as a replicated state machine: the "mgmt" part of the node's
//! [`zeroraft::Mux`].
//!
//! Tenants, app records (routes, schedules, the deployer's credential) and revocations are
//! changed only by [`MgmtCommand`]s applied from the Raft log, in log order, on every node.
//! The records live in one redb file, `DATA_DIR/state/mgmt.redb`; each applied batch is one
//! write transaction that also stores the batch's [`AppliedState`], so the records and the
//! position they correspond to are on disk together or not at all (the *persisted* restart
//! rule of [`zeroraft::StateMachine`]). A redb file rather than the JSON files of earlier
//! versions: one transaction covers several records and the position, which a directory of
//! files renamed one by one cannot.
//!
//! Applying is deterministic: a command carries everything its outcome depends on (the
//! proposer's clock, the per-principal bound), never the applying node's clock.
//!
//! After each batch (and after a snapshot is installed) the part sends the [`Change`]s on a
//! channel, so that the node reconciles what it serves (router, loaded apps, schedules,
//! certificates, revocation set) on every node, leader and followers alike.
//!
//! A node upgraded from a version that kept JSON files imports them once:
//! [`legacy_commands`] reads them as commands for the log, and [`mark_imported`] moves them
//! aside once those commands are committed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use zeroraft::{AppliedState, Command, StateMachine, StateMachineError};

use crate::state::{AppRecord, RevocationRecord, StateStore, TenantRecord};

/// The Mux part name of the management state.
pub const PART: &str = "mgmt";

const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
const REVOCATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("revocations");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const APPLIED: &str = "applied";

/// One change to the management state, as replicated through the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MgmtCommand {
    /// Creates a tenant; refused ([`MgmtResponse::Exists`]) when one of that name exists.
    CreateTenant(TenantRecord),
    /// Replaces an existing tenant's record (its host grants); [`MgmtResponse::NotFound`]
    /// when there is none.
    UpdateTenant(TenantRecord),
    /// Records a deployed app, replacing a previous version.
    PutApp(AppRecord),
    /// Removes an app's record.
    RemoveApp {
        /// Tenant.
        tenant: String,
        /// App name.
        name: String,
    },
    /// Records a revocation, bounded per principal as of `now` (the proposer's clock).
    Revoke {
        /// The record.
        record: RevocationRecord,
        /// Unix seconds when it was proposed: records whose delegation expired by then do
        /// not count against the bound, and are dropped.
        now: u64,
        /// The most live revocations one principal other than the Admin may hold.
        per_principal: u64,
    },
}

/// The outcome of one [`MgmtCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MgmtResponse {
    /// Applied.
    Done,
    /// `CreateTenant`: the tenant already exists (its record, unchanged).
    Exists(TenantRecord),
    /// The tenant (or app) to change does not exist.
    NotFound,
    /// `Revoke`: the delegation was already revoked.
    AlreadyRevoked,
    /// `Revoke`: the principal holds `held` live revocations, the most allowed.
    TooManyRevocations {
        /// Live revocations the principal holds.
        held: u64,
    },
    /// The command could not be read (from a newer version, or damaged).
    Invalid(String),
}

/// What changed, for the node to reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A tenant was created or its record changed.
    Tenant(String),
    /// An app record was put or removed.
    App {
        /// Tenant.
        tenant: String,
        /// App name.
        name: String,
    },
    /// A delegation was revoked.
    Revoked(String),
    /// Revocation records were dropped (their delegations expired).
    Forgotten(Vec<String>),
    /// The whole state was replaced by a snapshot: reconcile everything.
    Reset,
}

/// Encodes a command for [`zeroraft::RaftNode::write`] (framed for the Mux part).
pub fn command_bytes(command: &MgmtCommand) -> Result<Vec<u8>, serde_json::Error> {
    Ok(zeroraft::mux_command(PART, &serde_json::to_vec(command)?))
}

/// Reads a response [`zeroraft::RaftNode::write`] returned for a management command.
pub fn read_response(bytes: &[u8]) -> Result<MgmtResponse, String> {
    if let Some(refused) = zeroraft::mux_refusal(bytes) {
        return Err(refused);
    }
    serde_json::from_slice(bytes)
        .map_err(|e| format!("the management state machine's answer is unreadable: {e}"))
}

/// The management store: the redb file, read by the node and written only by [`MgmtPart`].
#[derive(Clone)]
pub struct MgmtStore {
    db: Arc<Database>,
    path: PathBuf,
}

fn storage(e: impl std::fmt::Display) -> StateMachineError {
    StateMachineError::new(format!("the management store: {e}"))
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, key: &str, bytes: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| anyhow::anyhow!("the stored {what} `{key}` is damaged: {e}"))
}

impl MgmtStore {
    /// Opens (or creates) `state_dir/mgmt.redb`.
    pub fn open(state_dir: &Path) -> anyhow::Result<MgmtStore> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", state_dir.display()))?;
        let path = state_dir.join("mgmt.redb");
        let db = Database::create(&path).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the management store {}: {e} (is another node using this data_dir?)",
                path.display()
            )
        })?;
        let txn = db.begin_write()?;
        for table in [TENANTS, APPS, REVOCATIONS, META] {
            txn.open_table(table)?;
        }
        txn.commit()?;
        Ok(MgmtStore {
            db: Arc::new(db),
            path,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn all<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        what: &str,
    ) -> anyhow::Result<Vec<T>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(table)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push(decode(what, k.value(), v.value())?);
        }
        Ok(out)
    }

    /// All tenants, by name.
    pub fn tenants(&self) -> anyhow::Result<Vec<TenantRecord>> {
        self.all(TENANTS, "tenant")
    }

    /// One tenant.
    pub fn tenant(&self, name: &str) -> anyhow::Result<Option<TenantRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TENANTS)?;
        match table.get(name)? {
            Some(v) => Ok(Some(decode("tenant", name, v.value())?)),
            None => Ok(None),
        }
    }

    /// All app records, by tenant and name.
    pub fn apps(&self) -> anyhow::Result<Vec<AppRecord>> {
        self.all(APPS, "app")
    }

    /// One app record.
    pub fn app(&self, tenant: &str, name: &str) -> anyhow::Result<Option<AppRecord>> {
        let key = app_key(tenant, name);
        let txn = self.db.begin_read()?;
        let table = txn.open_table(APPS)?;
        match table.get(key.as_str())? {
            Some(v) => Ok(Some(decode("app", &key, v.value())?)),
            None => Ok(None),
        }
    }

    /// All revocation records.
    pub fn revocations(&self) -> anyhow::Result<Vec<RevocationRecord>> {
        self.all(REVOCATIONS, "revocation")
    }

    /// Whether the store holds nothing (no record and no applied position).
    pub fn is_empty(&self) -> anyhow::Result<bool> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(TENANTS)?.is_empty()?
            && txn.open_table(APPS)?.is_empty()?
            && txn.open_table(REVOCATIONS)?.is_empty()?
            && txn.open_table(META)?.get(APPLIED)?.is_none())
    }
}

fn app_key(tenant: &str, name: &str) -> String {
    // Tenant names hold no '/', so the key is unambiguous and sorts by tenant.
    format!("{tenant}/{name}")
}

/// The management state machine (the Mux part [`PART`]).
pub struct MgmtPart {
    store: MgmtStore,
    changes: mpsc::UnboundedSender<Vec<Change>>,
}

impl MgmtPart {
    /// The part over `store`; every applied batch's changes go to `changes` (a closed
    /// receiver is not an error: the node is shutting down).
    pub fn new(store: MgmtStore, changes: mpsc::UnboundedSender<Vec<Change>>) -> MgmtPart {
        MgmtPart { store, changes }
    }
}

type Table<'t> = redb::Table<'t, &'static str, &'static [u8]>;

fn put<T: Serialize>(table: &mut Table<'_>, key: &str, value: &T) -> Result<(), StateMachineError> {
    let bytes = serde_json::to_vec(value).map_err(storage)?;
    table.insert(key, bytes.as_slice()).map_err(storage)?;
    Ok(())
}

fn apply_one(
    txn: &redb::WriteTransaction,
    command: &MgmtCommand,
    changes: &mut Vec<Change>,
) -> Result<MgmtResponse, StateMachineError> {
    match command {
        MgmtCommand::CreateTenant(t) => {
            let mut table = txn.open_table(TENANTS).map_err(storage)?;
            if let Some(existing) = table.get(t.name.as_str()).map_err(storage)? {
                let existing: TenantRecord =
                    serde_json::from_slice(existing.value()).map_err(storage)?;
                return Ok(MgmtResponse::Exists(existing));
            }
            put(&mut table, &t.name, t)?;
            changes.push(Change::Tenant(t.name.clone()));
            Ok(MgmtResponse::Done)
        }
        MgmtCommand::UpdateTenant(t) => {
            let mut table = txn.open_table(TENANTS).map_err(storage)?;
            if table.get(t.name.as_str()).map_err(storage)?.is_none() {
                return Ok(MgmtResponse::NotFound);
            }
            put(&mut table, &t.name, t)?;
            changes.push(Change::Tenant(t.name.clone()));
            Ok(MgmtResponse::Done)
        }
        MgmtCommand::PutApp(a) => {
            let mut table = txn.open_table(APPS).map_err(storage)?;
            put(&mut table, &app_key(&a.tenant, &a.name), a)?;
            changes.push(Change::App {
                tenant: a.tenant.clone(),
                name: a.name.clone(),
            });
            Ok(MgmtResponse::Done)
        }
        MgmtCommand::RemoveApp { tenant, name } => {
            let mut table = txn.open_table(APPS).map_err(storage)?;
            let removed = table
                .remove(app_key(tenant, name).as_str())
                .map_err(storage)?
                .is_some();
            if !removed {
                return Ok(MgmtResponse::NotFound);
            }
            changes.push(Change::App {
                tenant: tenant.clone(),
                name: name.clone(),
            });
            Ok(MgmtResponse::Done)
        }
        MgmtCommand::Revoke {
            record,
            now,
            per_principal,
        } => {
            let mut table = txn.open_table(REVOCATIONS).map_err(storage)?;
            if table.get(record.cid.as_str()).map_err(storage)?.is_some() {
                return Ok(MgmtResponse::AlreadyRevoked);
            }
            if !record.principal.is_empty() {
                let mut expired = Vec::new();
                let mut held = 0u64;
                for row in table.iter().map_err(storage)? {
                    let (k, v) = row.map_err(storage)?;
                    let r: RevocationRecord = serde_json::from_slice(v.value()).map_err(storage)?;
                    if r.forget_after.is_some_and(|t| t < *now) {
                        expired.push(k.value().to_string());
                    } else if r.principal == record.principal {
                        held += 1;
                    }
                }
                for cid in &expired {
                    table.remove(cid.as_str()).map_err(storage)?;
                }
                if !expired.is_empty() {
                    changes.push(Change::Forgotten(expired));
                }
                if held >= *per_principal {
                    return Ok(MgmtResponse::TooManyRevocations { held });
                }
            }
            put(&mut table, &record.cid, record)?;
            changes.push(Change::Revoked(record.cid.clone()));
            Ok(MgmtResponse::Done)
        }
    }
}

fn read_table<T: for<'de> Deserialize<'de>>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    what: &str,
) -> Result<BTreeMap<String, T>, StateMachineError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(table).map_err(storage)?;
    let mut rows = BTreeMap::new();
    for row in table.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let record = serde_json::from_slice(v.value())
            .map_err(|e| storage(format!("the stored {what} `{}` is damaged: {e}", k.value())))?;
        rows.insert(k.value().to_string(), record);
    }
    Ok(rows)
}

/// The snapshot format: every record, by table.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    tenants: BTreeMap<String, TenantRecord>,
    apps: BTreeMap<String, AppRecord>,
    revocations: BTreeMap<String, RevocationRecord>,
}

impl StateMachine for MgmtPart {
    fn applied_state(&mut self) -> Result<Option<Vec<u8>>, StateMachineError> {
        let txn = self.store.db.begin_read().map_err(storage)?;
        let meta = txn.open_table(META).map_err(storage)?;
        Ok(meta
            .get(APPLIED)
            .map_err(storage)?
            .map(|v| v.value().to_vec()))
    }

    fn apply(
        &mut self,
        commands: &[Command<'_>],
        state: &AppliedState,
    ) -> Result<Vec<Vec<u8>>, StateMachineError> {
        let txn = self.store.db.begin_write().map_err(storage)?;
        let mut changes = Vec::new();
        let mut responses = Vec::with_capacity(commands.len());
        for c in commands {
            let response = match serde_json::from_slice::<MgmtCommand>(c.data) {
                Ok(command) => apply_one(&txn, &command, &mut changes)?,
                Err(e) => MgmtResponse::Invalid(format!(
                    "entry {} is not a management command this node understands: {e}",
                    c.index
                )),
            };
            responses.push(serde_json::to_vec(&response).map_err(storage)?);
        }
        txn.open_table(META)
            .map_err(storage)?
            .insert(APPLIED, state.as_bytes())
            .map_err(storage)?;
        txn.commit().map_err(storage)?;
        if !changes.is_empty() {
            let _ = self.changes.send(changes);
        }
        Ok(responses)
    }

    fn snapshot(&mut self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        let snapshot = Snapshot {
            tenants: read_table(&self.store.db, TENANTS, "tenant")?,
            apps: read_table(&self.store.db, APPS, "app")?,
            revocations: read_table(&self.store.db, REVOCATIONS, "revocation")?,
        };
        serde_json::to_writer(out, &snapshot).map_err(storage)
    }

    fn install(
        &mut self,
        snapshot: &mut dyn Read,
        state: &AppliedState,
    ) -> Result<(), StateMachineError> {
        let snapshot: Snapshot = serde_json::from_reader(snapshot)
            .map_err(|e| storage(format!("the snapshot is unreadable: {e}")))?;
        let txn = self.store.db.begin_write().map_err(storage)?;
        for table in [TENANTS, APPS, REVOCATIONS] {
            txn.delete_table(table).map_err(storage)?;
        }
        {
            let mut t = txn.open_table(TENANTS).map_err(storage)?;
            for (k, v) in &snapshot.tenants {
                put(&mut t, k, v)?;
            }
            let mut a = txn.open_table(APPS).map_err(storage)?;
            for (k, v) in &snapshot.apps {
                put(&mut a, k, v)?;
            }
            let mut r = txn.open_table(REVOCATIONS).map_err(storage)?;
            for (k, v) in &snapshot.revocations {
                put(&mut r, k, v)?;
            }
            txn.open_table(META)
                .map_err(storage)?
                .insert(APPLIED, state.as_bytes())
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        let _ = self.changes.send(vec![Change::Reset]);
        Ok(())
    }
}

/// The JSON state of an earlier version under `state_dir`, as commands for the log:
/// tenants first, then apps, then revocations (each as it was, `now` 0 so that no record is
/// dropped as expired and no bound refuses one). Empty when there is none or it was imported.
pub fn legacy_commands(state_dir: &Path) -> anyhow::Result<Vec<MgmtCommand>> {
    if !state_dir.join("tenants").is_dir() {
        return Ok(Vec::new());
    }
    let Some(data_dir) = state_dir.parent() else {
        return Ok(Vec::new());
    };
    let old = StateStore::open(data_dir)?;
    let mut out: Vec<MgmtCommand> = old
        .tenants()?
        .into_iter()
        .map(MgmtCommand::CreateTenant)
        .collect();
    out.extend(old.apps()?.into_iter().map(MgmtCommand::PutApp));
    out.extend(
        old.revocations()?
            .into_iter()
            .filter(|r| !r.cid.is_empty())
            .map(|record| MgmtCommand::Revoke {
                record,
                now: 0,
                per_principal: u64::MAX,
            }),
    );
    Ok(out)
}

/// Moves the JSON state of an earlier version aside (into `state_dir/imported-json/`) once
/// its [`legacy_commands`] are committed, so that it is imported once.
pub fn mark_imported(state_dir: &Path) -> anyhow::Result<()> {
    let aside = state_dir.join("imported-json");
    std::fs::create_dir_all(&aside)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", aside.display()))?;
    for name in ["tenants", "apps", "revocations", "revocations.json"] {
        let from = state_dir.join(name);
        if from.exists() {
            std::fs::rename(&from, aside.join(name))
                .map_err(|e| anyhow::anyhow!("cannot move {} aside: {e}", from.display()))?;
        }
    }
    std::fs::File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| anyhow::anyhow!("cannot sync {}: {e}", state_dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;
    use std::time::Duration;

    use zero_auth::Keypair;
    use zeroraft::peer::Peers;
    use zeroraft::{Mux, NodeConfig, RaftNode};

    use super::*;

    fn tenant(name: &str) -> TenantRecord {
        TenantRecord {
            name: name.to_string(),
            owner: "did:key:z6Mkowner".to_string(),
            created_at: 1,
            hosts: vec![],
        }
    }

    fn app(tenant: &str, name: &str) -> AppRecord {
        AppRecord {
            tenant: tenant.to_string(),
            name: name.to_string(),
            routes: vec![format!("/{name}")],
            component: "sha256:00".to_string(),
            allowed_outbound_hosts: vec![],
            deployed_at: 2,
            code: format!("code/{name}"),
            holder: "did:key:z6Mkowner".to_string(),
            credential: vec![],
            schedules: vec![],
        }
    }

    fn revocation(cid: &str, principal: &str, forget_after: Option<u64>) -> RevocationRecord {
        RevocationRecord {
            cid: cid.to_string(),
            revoker: "did:key:z6Mkr".to_string(),
            principal: principal.to_string(),
            forget_after,
            revoked_at: 3,
        }
    }

    struct Node {
        raft: RaftNode<Mux>,
        store: MgmtStore,
        changes: mpsc::UnboundedReceiver<Vec<Change>>,
    }

    async fn start(dir: &Path, key: &Keypair) -> Node {
        let store = MgmtStore::open(&dir.join("state")).unwrap();
        let (tx, changes) = mpsc::unbounded_channel();
        let mut mux = Mux::new();
        mux.add(PART, Box::new(MgmtPart::new(store.clone(), tx)))
            .unwrap();
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let config = NodeConfig::new(
            1,
            key.clone(),
            listen,
            dir.join("raft"),
            Peers::new([key.did().clone()]),
        );
        let raft = RaftNode::start(config, mux).await.unwrap();
        Node {
            raft,
            store,
            changes,
        }
    }

    async fn write(node: &Node, command: MgmtCommand) -> MgmtResponse {
        let written = node
            .raft
            .write(command_bytes(&command).unwrap())
            .await
            .unwrap();
        read_response(&written.response).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_apply_through_the_log_report_changes_and_survive_a_restart_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::generate().unwrap();
        let mut node = start(dir.path(), &key).await;
        node.raft.initialize().await.unwrap();
        node.raft
            .wait_for_leader(Duration::from_secs(30))
            .await
            .unwrap();

        assert_eq!(
            write(&node, MgmtCommand::CreateTenant(tenant("acme"))).await,
            MgmtResponse::Done
        );
        let mut other = tenant("acme");
        other.owner = "did:key:z6Mkother".to_string();
        assert_eq!(
            write(&node, MgmtCommand::CreateTenant(other)).await,
            MgmtResponse::Exists(tenant("acme")),
            "a second create does not take the tenant over"
        );
        let mut hosts = tenant("acme");
        hosts.hosts = vec!["acme.example".to_string()];
        assert_eq!(
            write(&node, MgmtCommand::UpdateTenant(hosts.clone())).await,
            MgmtResponse::Done
        );
        assert_eq!(
            write(&node, MgmtCommand::UpdateTenant(tenant("ghost"))).await,
            MgmtResponse::NotFound
        );
        write(&node, MgmtCommand::PutApp(app("acme", "web"))).await;
        write(&node, MgmtCommand::PutApp(app("acme", "api"))).await;
        assert_eq!(
            write(
                &node,
                MgmtCommand::RemoveApp {
                    tenant: "acme".into(),
                    name: "api".into()
                }
            )
            .await,
            MgmtResponse::Done
        );
        assert_eq!(
            write(
                &node,
                MgmtCommand::RemoveApp {
                    tenant: "acme".into(),
                    name: "api".into()
                }
            )
            .await,
            MgmtResponse::NotFound
        );
        assert_eq!(node.store.tenant("acme").unwrap(), Some(hosts.clone()));
        assert_eq!(node.store.apps().unwrap(), vec![app("acme", "web")]);

        let mut seen = Vec::new();
        while let Ok(batch) = node.changes.try_recv() {
            seen.extend(batch);
        }
        assert_eq!(
            seen,
            vec![
                Change::Tenant("acme".into()),
                Change::Tenant("acme".into()),
                Change::App {
                    tenant: "acme".into(),
                    name: "web".into()
                },
                Change::App {
                    tenant: "acme".into(),
                    name: "api".into()
                },
                Change::App {
                    tenant: "acme".into(),
                    name: "api".into()
                },
            ]
        );

        // Garbage is a refusal, not a stopped engine.
        let garbage = node
            .raft
            .write(zeroraft::mux_command(PART, b"{not json"))
            .await
            .unwrap();
        assert!(matches!(
            read_response(&garbage.response).unwrap(),
            MgmtResponse::Invalid(_)
        ));

        // Restart: the store holds its position, nothing is applied twice (no change comes
        // back), and the records are there.
        node.raft.shutdown().await.unwrap();
        drop(node.store);
        let mut node = start(dir.path(), &key).await;
        node.raft
            .wait_for_leader(Duration::from_secs(30))
            .await
            .unwrap();
        node.raft.ensure_linearizable().await.unwrap();
        assert!(node.changes.try_recv().is_err(), "nothing re-applied");
        assert_eq!(node.store.tenant("acme").unwrap(), Some(hosts));
        assert_eq!(node.store.apps().unwrap(), vec![app("acme", "web")]);
        node.raft.shutdown().await.unwrap();
    }

    /// Three members: a tenant created through a follower (forwarded to the leader) is in
    /// every member's store and every member is told, so each can reconcile; after the
    /// leader stops, a write through a follower commits on the new leader.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn three_members_apply_every_command_and_tell_every_node() {
        let wait = Duration::from_secs(60);
        let root = tempfile::tempdir().unwrap();
        let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate().unwrap()).collect();
        let peers = Peers::new(keys.iter().map(|k| k.did().clone()));
        let mut nodes = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let dir = root.path().join(format!("n{i}"));
            let store = MgmtStore::open(&dir.join("state")).unwrap();
            let (tx, changes) = mpsc::unbounded_channel();
            let mut mux = Mux::new();
            mux.add(PART, Box::new(MgmtPart::new(store.clone(), tx)))
                .unwrap();
            let config = NodeConfig::new(
                i as u64 + 1,
                key.clone(),
                "127.0.0.1:0".parse().unwrap(),
                dir.join("raft"),
                peers.clone(),
            );
            let raft = RaftNode::start(config, mux).await.unwrap();
            nodes.push(Node {
                raft,
                store,
                changes,
            });
        }
        nodes[0].raft.initialize().await.unwrap();
        nodes[0].raft.wait_for_leader(wait).await.unwrap();
        for i in 1..3 {
            let member = nodes[i].raft.member().clone();
            nodes[0]
                .raft
                .add_learner(i as u64 + 1, member, wait)
                .await
                .unwrap();
        }
        nodes[0]
            .raft
            .change_membership(BTreeSet::from([1, 2, 3]))
            .await
            .unwrap();

        let via_follower = nodes[2]
            .raft
            .write(command_bytes(&MgmtCommand::CreateTenant(tenant("acme"))).unwrap())
            .await
            .unwrap();
        assert_eq!(
            read_response(&via_follower.response).unwrap(),
            MgmtResponse::Done
        );
        for node in &mut nodes {
            node.raft
                .wait_applied(via_follower.index, wait)
                .await
                .unwrap();
            assert_eq!(node.store.tenant("acme").unwrap(), Some(tenant("acme")));
            let told = node.changes.recv().await.unwrap();
            assert_eq!(told, vec![Change::Tenant("acme".into())]);
        }

        let old = nodes.remove(0);
        old.raft.shutdown().await.unwrap();
        let after = nodes[1]
            .raft
            .write(command_bytes(&MgmtCommand::PutApp(app("acme", "web"))).unwrap())
            .await
            .unwrap();
        for node in &nodes {
            node.raft.wait_applied(after.index, wait).await.unwrap();
            assert_eq!(node.store.apps().unwrap(), vec![app("acme", "web")]);
            assert_eq!(node.store.tenant("acme").unwrap(), Some(tenant("acme")));
        }
        for node in nodes {
            node.raft.shutdown().await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revocations_are_bounded_per_principal_by_the_proposers_clock() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::generate().unwrap();
        let node = start(dir.path(), &key).await;
        node.raft.initialize().await.unwrap();
        node.raft
            .wait_for_leader(Duration::from_secs(30))
            .await
            .unwrap();
        let revoke = |cid: &str, forget_after, now| MgmtCommand::Revoke {
            record: revocation(cid, "did:key:z6Mkp", forget_after),
            now,
            per_principal: 2,
        };
        assert_eq!(
            write(&node, revoke("c1", Some(100), 10)).await,
            MgmtResponse::Done
        );
        assert_eq!(
            write(&node, revoke("c1", Some(100), 10)).await,
            MgmtResponse::AlreadyRevoked
        );
        assert_eq!(
            write(&node, revoke("c2", None, 10)).await,
            MgmtResponse::Done
        );
        assert_eq!(
            write(&node, revoke("c3", None, 10)).await,
            MgmtResponse::TooManyRevocations { held: 2 }
        );
        // Later (by the proposer's clock) c1's delegation expired: it is dropped, c3 fits.
        assert_eq!(
            write(&node, revoke("c3", None, 200)).await,
            MgmtResponse::Done
        );
        let mut cids: Vec<String> = node
            .store
            .revocations()
            .unwrap()
            .into_iter()
            .map(|r| r.cid)
            .collect();
        cids.sort();
        assert_eq!(cids, vec!["c2", "c3"]);
        // The Admin (no principal) is not bounded.
        for i in 0..3 {
            let admin = MgmtCommand::Revoke {
                record: revocation(&format!("a{i}"), "", None),
                now: 10,
                per_principal: 2,
            };
            assert_eq!(write(&node, admin).await, MgmtResponse::Done);
        }
        node.raft.shutdown().await.unwrap();
    }

    #[test]
    fn a_snapshot_round_trips_into_another_store_and_reports_a_reset() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let store = MgmtStore::open(a.path()).unwrap();
        let mut part = MgmtPart::new(store.clone(), tx);
        let txn = store.db.begin_write().unwrap();
        let mut changes = Vec::new();
        apply_one(
            &txn,
            &MgmtCommand::CreateTenant(tenant("acme")),
            &mut changes,
        )
        .unwrap();
        apply_one(&txn, &MgmtCommand::PutApp(app("acme", "web")), &mut changes).unwrap();
        txn.commit().unwrap();
        let mut snap = Vec::new();
        part.snapshot(&mut snap).unwrap();

        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let other = MgmtStore::open(b.path()).unwrap();
        let mut part2 = MgmtPart::new(other.clone(), tx2);
        // What the other store held before is replaced.
        let txn = other.db.begin_write().unwrap();
        apply_one(
            &txn,
            &MgmtCommand::CreateTenant(tenant("stale")),
            &mut changes,
        )
        .unwrap();
        txn.commit().unwrap();
        let state = applied_state_at(7);
        part2.install(&mut snap.as_slice(), &state).unwrap();
        assert_eq!(other.tenants().unwrap(), vec![tenant("acme")]);
        assert_eq!(other.apps().unwrap(), vec![app("acme", "web")]);
        assert_eq!(
            part2.applied_state().unwrap(),
            Some(state.as_bytes().to_vec())
        );
        assert_eq!(rx2.try_recv().unwrap(), vec![Change::Reset]);
        assert!(part2.install(&mut &b"junk"[..], &state).is_err());
        assert_eq!(
            other.tenants().unwrap(),
            vec![tenant("acme")],
            "a bad snapshot changes nothing"
        );
    }

    /// An applied state at `index`, as zeroraft makes them (through a one-member node's log).
    fn applied_state_at(index: u64) -> AppliedState {
        // AppliedState is built by zeroraft only; a Mux records what it is given, so take the
        // state a Mux part receives when a real node applies entries.
        struct Capture(std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>);
        impl StateMachine for Capture {
            fn applied_state(&mut self) -> Result<Option<Vec<u8>>, StateMachineError> {
                Ok(None)
            }
            fn apply(
                &mut self,
                commands: &[Command<'_>],
                state: &AppliedState,
            ) -> Result<Vec<Vec<u8>>, StateMachineError> {
                *self.0.lock().unwrap() = Some(state.as_bytes().to_vec());
                Ok(commands.iter().map(|_| Vec::new()).collect())
            }
            fn snapshot(&mut self, _: &mut dyn Write) -> Result<(), StateMachineError> {
                Ok(())
            }
            fn install(
                &mut self,
                _: &mut dyn Read,
                _: &AppliedState,
            ) -> Result<(), StateMachineError> {
                Ok(())
            }
        }
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let key = Keypair::generate().unwrap();
            let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
            let config = NodeConfig::new(
                1,
                key.clone(),
                "127.0.0.1:0".parse().unwrap(),
                dir.path(),
                Peers::new([key.did().clone()]),
            );
            let node = RaftNode::start(config, Capture(seen.clone()))
                .await
                .unwrap();
            node.initialize().await.unwrap();
            node.wait_for_leader(Duration::from_secs(30)).await.unwrap();
            loop {
                let w = node.write(vec![1]).await.unwrap();
                if w.index >= index {
                    break;
                }
            }
            node.shutdown().await.unwrap();
            let bytes = seen.lock().unwrap().clone().unwrap();
            AppliedState::from_bytes(&bytes).unwrap()
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_json_state_of_an_earlier_version_is_imported_once_through_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let old = StateStore::open(dir.path()).unwrap();
        old.put_tenant(&tenant("acme")).unwrap();
        old.put_tenant(&tenant("beta")).unwrap();
        old.put_app(&app("acme", "web")).unwrap();
        old.put_revocation(&revocation("bafyold", "", None))
            .unwrap();
        let state_dir = dir.path().join("state");
        let commands = legacy_commands(&state_dir).unwrap();
        assert_eq!(commands.len(), 4);

        let key = Keypair::generate().unwrap();
        let node = start(dir.path(), &key).await;
        node.raft.initialize().await.unwrap();
        node.raft
            .wait_for_leader(Duration::from_secs(30))
            .await
            .unwrap();
        assert!(node.store.is_empty().unwrap());
        for c in &commands {
            assert_eq!(write(&node, c.clone()).await, MgmtResponse::Done);
        }
        mark_imported(&state_dir).unwrap();
        let names: BTreeSet<String> = node
            .store
            .tenants()
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["acme".to_string(), "beta".to_string()])
        );
        assert_eq!(node.store.apps().unwrap(), vec![app("acme", "web")]);
        assert_eq!(node.store.revocations().unwrap()[0].cid, "bafyold");
        assert!(!node.store.is_empty().unwrap());
        // Imported once: the files are aside, and a second look finds nothing to import.
        assert!(legacy_commands(&state_dir).unwrap().is_empty());
        assert!(state_dir.join("imported-json/tenants/acme.json").is_file());
        node.raft.shutdown().await.unwrap();
    }
}
