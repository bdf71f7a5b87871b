//! The node's revocation set and replay journal: what makes revocations and single-use
//! invocations hold across restarts, within bounds.
//!
//! - [`Revocations`]: the revoked delegation CIDs, each stored as its own record under
//!   `DATA_DIR/state/revocations/` (one revocation writes one file; none is rewritten), bounded
//!   per principal (`[node] max_revocations_per_principal`; the Admin is not bounded). A record
//!   whose revoked delegation has expired no longer matters (the delegation is refused as
//!   expired anyway) and is dropped.
//! - [`ReplayStore`]: the replay cache's journal, a redb table under
//!   `DATA_DIR/state/replay.redb`, written (and fsynced) before an invocation is executed, so
//!   that an invocation replayed after a restart is refused. Entries are dropped once expired.

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use zero_auth::{Cid, Did, ReplayEntry, ReplayJournal, RevocationStore};

use crate::apps::Refusal;
use crate::state::StateStore;

/// One revocation, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevocationRecord {
    /// The revoked delegation's CID.
    pub cid: String,
    /// Who revoked it (empty for records that predate this field).
    #[serde(default)]
    pub revoker: String,
    /// The principal the record counts against (see `zero_auth::VerifiedRevocation`); empty
    /// for the Admin's revocations and for records that predate this field.
    #[serde(default)]
    pub principal: String,
    /// Unix time after which the revoked delegation is expired (its `exp` plus the clock
    /// skew), so that the record may be dropped; `None`: kept forever.
    #[serde(default)]
    pub forget_after: Option<u64>,
    /// Unix seconds.
    #[serde(default)]
    pub revoked_at: u64,
}

/// The set of revoked delegations, shared by every check the node makes.
pub struct Revocations {
    per_principal: usize,
    state: RwLock<HashMap<Cid, RevocationRecord>>,
}

impl RevocationStore for Revocations {
    fn is_revoked(&self, cid: &Cid) -> bool {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(cid)
    }
}

/// What [`Revocations::add`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// The delegation is now revoked.
    New,
    /// It was already revoked (revocations are idempotent).
    Already,
}

impl Revocations {
    /// Loads the stored revocations, dropping (and deleting) those whose delegation has expired
    /// by `now`.
    pub fn load(state: &StateStore, per_principal: usize, now: u64) -> anyhow::Result<Revocations> {
        let mut set = HashMap::new();
        for record in state.revocations()? {
            let cid = Cid::try_from(record.cid.as_str())
                .map_err(|e| anyhow::anyhow!("revocation record `{}`: bad CID: {e}", record.cid))?;
            if record.forget_after.is_some_and(|t| t < now) {
                if let Err(e) = state.remove_revocation(&record.cid) {
                    tracing::warn!(cid = %record.cid, error = %e, "could not delete an expired revocation record");
                }
                continue;
            }
            set.insert(cid, record);
        }
        Ok(Revocations {
            per_principal: per_principal.max(1),
            state: RwLock::new(set),
        })
    }

    /// The number of revocations held.
    pub fn len(&self) -> usize {
        self.state.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no delegation is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a revocation durably (its own file), then in memory. A principal other than the
    /// Admin (`record.principal` empty) holds at most `per_principal` live revocations: beyond,
    /// `TooManyRevocations` (429) until some of its revoked delegations expire.
    pub fn add(
        &self,
        state: &StateStore,
        cid: Cid,
        record: RevocationRecord,
        now: u64,
    ) -> Result<Added, Refusal> {
        let mut set = self.state.write().unwrap_or_else(|p| p.into_inner());
        if set.contains_key(&cid) {
            return Ok(Added::Already);
        }
        if !record.principal.is_empty() {
            let expired: Vec<Cid> = set
                .iter()
                .filter(|(_, r)| r.forget_after.is_some_and(|t| t < now))
                .map(|(c, _)| *c)
                .collect();
            for c in expired {
                if let Some(r) = set.remove(&c)
                    && let Err(e) = state.remove_revocation(&r.cid)
                {
                    tracing::warn!(cid = %r.cid, error = %e, "could not delete an expired revocation record");
                }
            }
            let held = set
                .values()
                .filter(|r| r.principal == record.principal)
                .count();
            if held >= self.per_principal {
                return Err(Refusal::new(
                    429,
                    "TooManyRevocations",
                    format!(
                        "{} already holds {held} revocations of delegations that have not expired, \
                         the most kept per principal ([node] max_revocations_per_principal); \
                         revocations free up as the revoked delegations expire (give delegations \
                         an expiry), or ask the Admin to revoke",
                        record.principal
                    ),
                ));
            }
        }
        state.put_revocation(&record).map_err(|e| {
            Refusal::new(500, "Storage", format!("cannot record the revocation: {e}"))
        })?;
        set.insert(cid, record);
        Ok(Added::New)
    }
}

const REPLAY: TableDefinition<&str, (&str, u64)> = TableDefinition::new("replay");

/// The replay cache's durable journal (see the module documentation).
pub struct ReplayStore {
    db: Database,
}

impl ReplayStore {
    /// Opens (or creates) `state_dir/replay.redb`, and returns the entries still live at
    /// `now` (expired ones are deleted).
    pub fn open(state_dir: &Path, now: u64) -> anyhow::Result<(ReplayStore, Vec<ReplayEntry>)> {
        let path = state_dir.join("replay.redb");
        let db = Database::create(&path).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the replay journal {}: {e} (is another node using this data directory?)",
                path.display()
            )
        })?;
        let store = ReplayStore { db };
        let live = store.load(now).map_err(|e| {
            anyhow::anyhow!("the replay journal {} is unreadable: {e}", path.display())
        })?;
        Ok((store, live))
    }

    fn load(&self, now: u64) -> Result<Vec<ReplayEntry>, redb::Error> {
        let mut live = Vec::new();
        let mut expired = Vec::new();
        {
            let tx = self.db.begin_read()?;
            let table = match tx.open_table(REPLAY) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(live),
                Err(e) => return Err(e.into()),
            };
            for row in table.iter()? {
                let (k, v) = row?;
                let (principal, deadline) = v.value();
                let parsed = Cid::try_from(k.value())
                    .ok()
                    .zip(Did::parse(principal).ok());
                match parsed {
                    Some((invocation, principal)) if deadline >= now => live.push(ReplayEntry {
                        principal,
                        invocation,
                        deadline,
                    }),
                    _ => expired.push(k.value().to_string()),
                }
            }
        }
        if !expired.is_empty() {
            let tx = self.db.begin_write()?;
            {
                let mut table = tx.open_table(REPLAY)?;
                for k in &expired {
                    table.remove(k.as_str())?;
                }
            }
            tx.commit()?;
        }
        Ok(live)
    }

    fn write(&self, entry: &ReplayEntry, expired: &[Cid]) -> Result<(), redb::Error> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(REPLAY)?;
            for cid in expired {
                table.remove(cid.to_string().as_str())?;
            }
            let principal = entry.principal.to_string();
            table.insert(
                entry.invocation.to_string().as_str(),
                (principal.as_str(), entry.deadline),
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl ReplayJournal for ReplayStore {
    fn record(&self, entry: &ReplayEntry, expired: &[Cid]) -> Result<(), String> {
        self.write(entry, expired).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cid: &Cid, principal: &str, forget_after: Option<u64>) -> RevocationRecord {
        RevocationRecord {
            cid: cid.to_string(),
            revoker: principal.to_string(),
            principal: principal.to_string(),
            forget_after,
            revoked_at: 0,
        }
    }

    #[test]
    fn revocations_are_bounded_per_principal_and_forgotten_once_expired() {
        let dir = std::env::temp_dir().join(format!("zero-revocations-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = StateStore::open(&dir).unwrap();
        let cid = |n: u8| zero_auth::cid_of(&[n]);
        let revs = Revocations::load(&state, 2, 100).unwrap();
        // Two live revocations for principal a; the third is refused; b and the Admin are not.
        for n in [1, 2] {
            let added = revs.add(&state, cid(n), record(&cid(n), "a", Some(1000)), 100);
            assert_eq!(added.unwrap(), Added::New);
        }
        let refused = revs
            .add(&state, cid(3), record(&cid(3), "a", Some(1000)), 100)
            .unwrap_err();
        assert_eq!(
            (refused.status, refused.error.as_str()),
            (429, "TooManyRevocations")
        );
        revs.add(&state, cid(4), record(&cid(4), "b", None), 100)
            .unwrap();
        revs.add(&state, cid(5), record(&cid(5), "", None), 100)
            .unwrap();
        assert_eq!(
            revs.add(&state, cid(1), record(&cid(1), "a", Some(1000)), 100)
                .unwrap(),
            Added::Already
        );
        assert!(revs.is_revoked(&cid(1)) && !revs.is_revoked(&cid(3)));
        // After the revoked delegations expire, their records no longer count and are deleted.
        revs.add(&state, cid(3), record(&cid(3), "a", Some(5000)), 2000)
            .unwrap();
        assert!(!revs.is_revoked(&cid(1)));
        // One file per revocation, reloaded as they are; expired ones are dropped at load.
        let reloaded = Revocations::load(&state, 2, 2000).unwrap();
        assert_eq!(reloaded.len(), 3);
        let reloaded = Revocations::load(&state, 2, 6000).unwrap();
        assert_eq!(reloaded.len(), 2, "cid(3) expired at 5000");
        assert_eq!(
            std::fs::read_dir(dir.join("state/revocations"))
                .unwrap()
                .count(),
            2
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
