//! [`Mux`]: several state machines (the node's providers) behind one Raft log.
//!
//! Each command names its part ([`mux_command`]); the Mux routes it there. Every part keeps
//! its own applied state (the [restart rule](crate::StateMachine) holds per part), so a part
//! that stored more than another before a crash is not given the same command twice.
//!
//! # Encodings
//!
//! - A command: one byte with the part name's length, the name, then the part's payload.
//! - A snapshot: for every part, in name order, one byte with the name's length, the name, the
//!   part snapshot's length (8 bytes, big-endian) and the part's snapshot bytes.
//! - A response: the part's response, unchanged. A command the Mux cannot route (no such
//!   part, or malformed) gets a refusal response instead, which [`mux_refusal`] recognizes.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use openraft::LogId;

use crate::{AppliedState, Command, Error, NodeId, StateMachine, StateMachineError};

/// The longest part name, in bytes.
const MAX_NAME: usize = 32;

/// The first bytes of a refusal response (a part's own responses never start with them
/// unless the part chooses to).
const REFUSAL_PREFIX: &[u8] = b"\xffzeroraft-mux-refused: ";

/// Several named [`StateMachine`]s ("parts") replicated through one log.
pub struct Mux {
    parts: BTreeMap<String, Part>,
}

struct Part {
    machine: Box<dyn StateMachine>,
    /// The part's position as it last reported or stored it; `None` before the first.
    /// Loaded from the part on first use.
    position: Option<Position>,
}

/// A part's stored applied state and the log id in it.
#[derive(Clone)]
struct Position {
    bytes: Vec<u8>,
    last: Option<LogId<NodeId>>,
}

impl Part {
    /// The part's position: `Ok(None)` when the part holds no state yet.
    fn position(&mut self, name: &str) -> Result<Option<Position>, StateMachineError> {
        if self.position.is_none() {
            let bytes = self.machine.applied_state().map_err(|e| {
                StateMachineError::new(format!("mux part {name:?}: cannot report its state: {e}"))
            })?;
            if let Some(bytes) = bytes {
                let state = AppliedState::from_bytes(&bytes)
                    .map_err(|e| StateMachineError::new(format!("mux part {name:?}: {e}")))?;
                self.position = Some(Position {
                    last: state.last_applied,
                    bytes,
                });
            }
        }
        Ok(self.position.clone())
    }
}

impl Default for Mux {
    fn default() -> Self {
        Mux::new()
    }
}

impl Mux {
    /// A Mux without parts.
    pub fn new() -> Mux {
        Mux {
            parts: BTreeMap::new(),
        }
    }

    /// Adds a part; names are unique, 1..=32 bytes of `[a-z0-9-]`. Err on duplicate/bad name.
    pub fn add(&mut self, name: &str, part: Box<dyn StateMachine>) -> Result<(), Error> {
        check_name(name).map_err(Error::Config)?;
        if self.parts.contains_key(name) {
            return Err(Error::Config(format!(
                "the mux already has a part named {name:?}: give each part its own name"
            )));
        }
        self.parts.insert(
            name.to_string(),
            Part {
                machine: part,
                position: None,
            },
        );
        Ok(())
    }

    /// The names of the parts, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.keys().map(String::as_str)
    }

    /// The part named `name`, to read its state (e.g. through
    /// [`RaftNode::read`](crate::RaftNode::read)).
    pub fn part(&self, name: &str) -> Option<&dyn StateMachine> {
        self.parts.get(name).map(|p| p.machine.as_ref())
    }

    /// The part named `name`, mutably.
    pub fn part_mut(&mut self, name: &str) -> Option<&mut (dyn StateMachine + 'static)> {
        self.parts.get_mut(name).map(|p| p.machine.as_mut())
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "mux part name {name:?} must be 1 to {MAX_NAME} bytes long"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "mux part name {name:?} contains {c:?}: use only a-z, 0-9 and '-'"
        ));
    }
    Ok(())
}

/// The command bytes for `part`: what callers pass to RaftNode::write.
pub fn mux_command(part: &str, payload: &[u8]) -> Vec<u8> {
    // A name longer than 255 bytes cannot be framed; it is cut, which names no part (names
    // are at most 32 bytes) and is refused when applied.
    let name = &part.as_bytes()[..part.len().min(255)];
    let mut out = Vec::with_capacity(1 + name.len() + payload.len());
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(payload);
    out
}

/// When `response` is the Mux's refusal of a command (no such part, or a malformed command),
/// the reason; `None` for a part's own response.
pub fn mux_refusal(response: &[u8]) -> Option<String> {
    response
        .strip_prefix(REFUSAL_PREFIX)
        .map(|r| String::from_utf8_lossy(r).into_owned())
}

fn refusal(reason: &str) -> Vec<u8> {
    let mut out = REFUSAL_PREFIX.to_vec();
    out.extend_from_slice(reason.as_bytes());
    out
}

/// Splits a command into its part name and payload.
fn split(data: &[u8]) -> Result<(&str, &[u8]), String> {
    let Some((&len, rest)) = data.split_first() else {
        return Err("the command is empty: it must name a mux part".to_string());
    };
    let len = len as usize;
    if rest.len() < len {
        return Err("the command is truncated inside its part name".to_string());
    }
    let (name, payload) = rest.split_at(len);
    let name = std::str::from_utf8(name)
        .map_err(|_| "the command's part name is not UTF-8".to_string())?;
    Ok((name, payload))
}

/// Whether the part at `position` already holds the entry `index`.
fn holds(position: &Option<Position>, index: u64) -> bool {
    matches!(position, Some(Position { last: Some(l), .. }) if l.index >= index)
}

impl StateMachine for Mux {
    /// The lowest position of any part; `None` when any part holds nothing yet (zeroraft then
    /// installs the latest snapshot into every part, or replays the log from the start; parts
    /// further on skip what they hold).
    fn applied_state(&mut self) -> Result<Option<Vec<u8>>, StateMachineError> {
        let mut lowest: Option<Position> = None;
        for (name, part) in &mut self.parts {
            let Some(position) = part.position(name)? else {
                return Ok(None);
            };
            if lowest.as_ref().is_none_or(|l| position.last < l.last) {
                lowest = Some(position);
            }
        }
        Ok(lowest.map(|p| p.bytes))
    }

    fn apply(
        &mut self,
        commands: &[Command<'_>],
        state: &AppliedState,
    ) -> Result<Vec<Vec<u8>>, StateMachineError> {
        let mut responses: Vec<Option<Vec<u8>>> = vec![None; commands.len()];
        // Each part's commands (with their place in the batch) above its position.
        let mut routed: BTreeMap<&str, Vec<(usize, Command<'_>)>> = BTreeMap::new();
        for (i, command) in commands.iter().enumerate() {
            match split(command.data) {
                Ok((name, payload)) => match self.parts.get_mut(name) {
                    Some(part) => {
                        let position = part.position(name)?;
                        if holds(&position, command.index) {
                            // Applied before a crash; nobody waits for this response.
                            responses[i] = Some(Vec::new());
                        } else {
                            routed.entry(name).or_default().push((
                                i,
                                Command {
                                    index: command.index,
                                    term: command.term,
                                    data: payload,
                                },
                            ));
                        }
                    }
                    None => {
                        responses[i] = Some(refusal(&format!(
                            "this cluster has no state part named {name:?}"
                        )))
                    }
                },
                Err(reason) => responses[i] = Some(refusal(&reason)),
            }
        }
        for (name, part) in &mut self.parts {
            let position = part.position(name)?;
            if position
                .as_ref()
                .is_some_and(|p| p.last > state.last_applied)
            {
                // The part is further on than this batch (it stored more before a crash): it
                // holds every command here already; moving it back would replay them.
                continue;
            }
            let mine = routed.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            let part_commands: Vec<Command<'_>> = mine.iter().map(|(_, c)| *c).collect();
            let out = part
                .machine
                .apply(&part_commands, state)
                .map_err(|e| StateMachineError::new(format!("mux part {name:?}: {e}")))?;
            if out.len() != part_commands.len() {
                return Err(StateMachineError::new(format!(
                    "mux part {name:?} gave {} responses for {} commands",
                    out.len(),
                    part_commands.len()
                )));
            }
            for ((i, _), response) in mine.iter().zip(out) {
                responses[*i] = Some(response);
            }
            part.position = Some(Position {
                bytes: state.as_bytes().to_vec(),
                last: state.last_applied,
            });
        }
        Ok(responses
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect())
    }

    fn snapshot(&mut self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        for (name, part) in &mut self.parts {
            let mut bytes = Vec::new();
            part.machine
                .snapshot(&mut bytes)
                .map_err(|e| StateMachineError::new(format!("mux part {name:?}: snapshot: {e}")))?;
            out.write_all(&[name.len() as u8])?;
            out.write_all(name.as_bytes())?;
            out.write_all(&(bytes.len() as u64).to_be_bytes())?;
            out.write_all(&bytes)?;
        }
        Ok(())
    }

    fn install(
        &mut self,
        snapshot: &mut dyn Read,
        state: &AppliedState,
    ) -> Result<(), StateMachineError> {
        // Read every frame first: a snapshot that does not fit this Mux changes no part.
        let mut frames: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        loop {
            let mut len = [0u8; 1];
            if snapshot.read(&mut len)? == 0 {
                break;
            }
            let mut name = vec![0u8; len[0] as usize];
            snapshot.read_exact(&mut name).map_err(|e| {
                StateMachineError::new(format!("the mux snapshot is truncated in a name: {e}"))
            })?;
            let name = String::from_utf8(name)
                .map_err(|_| StateMachineError::new("the mux snapshot has a non-UTF-8 name"))?;
            let mut size = [0u8; 8];
            snapshot.read_exact(&mut size).map_err(|e| {
                StateMachineError::new(format!("the mux snapshot is truncated at {name:?}: {e}"))
            })?;
            let size = u64::from_be_bytes(size);
            let mut bytes = Vec::new();
            let read = snapshot.take(size).read_to_end(&mut bytes)?;
            if read as u64 != size {
                return Err(StateMachineError::new(format!(
                    "the mux snapshot is truncated in part {name:?}"
                )));
            }
            if !self.parts.contains_key(&name) {
                return Err(StateMachineError::new(format!(
                    "the snapshot has a part {name:?} that this node does not run"
                )));
            }
            if frames.insert(name.clone(), bytes).is_some() {
                return Err(StateMachineError::new(format!(
                    "the snapshot has part {name:?} twice"
                )));
            }
        }
        if let Some(missing) = self.parts.keys().find(|n| !frames.contains_key(*n)) {
            return Err(StateMachineError::new(format!(
                "the snapshot has no part {missing:?}; it was written by a node without it"
            )));
        }
        for (name, part) in &mut self.parts {
            let bytes = frames.remove(name).unwrap_or_default();
            part.machine
                .install(&mut bytes.as_slice(), state)
                .map_err(|e| StateMachineError::new(format!("mux part {name:?}: install: {e}")))?;
            part.position = Some(Position {
                bytes: state.as_bytes().to_vec(),
                last: state.last_applied,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use openraft::{CommittedLeaderId, StoredMembership};

    use super::*;
    use crate::codec::{decode, encode};

    /// A persisted part: its commands and applied state live in a shared "disk".
    #[derive(Default, Clone)]
    struct Disk {
        applied: Vec<(u64, Vec<u8>)>,
        state: Option<Vec<u8>>,
    }

    struct Persisted(Arc<Mutex<Disk>>);

    impl StateMachine for Persisted {
        fn applied_state(&mut self) -> Result<Option<Vec<u8>>, StateMachineError> {
            Ok(self.0.lock().unwrap().state.clone())
        }
        fn apply(
            &mut self,
            commands: &[Command<'_>],
            state: &AppliedState,
        ) -> Result<Vec<Vec<u8>>, StateMachineError> {
            let mut disk = self.0.lock().unwrap();
            let mut out = Vec::new();
            for c in commands {
                disk.applied.push((c.index, c.data.to_vec()));
                out.push(format!("ok {}", c.index).into_bytes());
            }
            disk.state = Some(state.as_bytes().to_vec());
            Ok(out)
        }
        fn snapshot(&mut self, out: &mut dyn Write) -> Result<(), StateMachineError> {
            let disk = self.0.lock().unwrap();
            out.write_all(&encode(&disk.applied).map_err(StateMachineError::new)?)?;
            Ok(())
        }
        fn install(
            &mut self,
            snapshot: &mut dyn Read,
            state: &AppliedState,
        ) -> Result<(), StateMachineError> {
            let mut bytes = Vec::new();
            snapshot.read_to_end(&mut bytes)?;
            let mut disk = self.0.lock().unwrap();
            disk.applied = decode(&bytes).map_err(StateMachineError::new)?;
            disk.state = Some(state.as_bytes().to_vec());
            Ok(())
        }
    }

    fn state(index: u64) -> AppliedState {
        AppliedState::new(
            Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            StoredMembership::default(),
        )
        .unwrap()
    }

    fn mux(disks: &[(&str, &Arc<Mutex<Disk>>)]) -> Mux {
        let mut m = Mux::new();
        for (name, disk) in disks {
            m.add(name, Box::new(Persisted((*disk).clone()))).unwrap();
        }
        m
    }

    #[test]
    fn names_are_checked_and_unique() {
        let disk = Arc::new(Mutex::new(Disk::default()));
        let mut m = Mux::new();
        m.add("mgmt", Box::new(Persisted(disk.clone()))).unwrap();
        let dup = m
            .add("mgmt", Box::new(Persisted(disk.clone())))
            .unwrap_err();
        assert!(dup.to_string().contains("already has a part"), "{dup}");
        for bad in ["", "Mgmt", "a_b", "é", &"x".repeat(33)] {
            let e = m.add(bad, Box::new(Persisted(disk.clone()))).unwrap_err();
            assert!(e.to_string().contains("mux part name"), "{bad}: {e}");
        }
        m.add(&"x".repeat(32), Box::new(Persisted(disk))).unwrap();
        assert_eq!(m.names().count(), 2);
    }

    #[test]
    fn commands_go_to_their_part_and_a_part_ahead_after_a_crash_applies_nothing_twice() {
        let a = Arc::new(Mutex::new(Disk::default()));
        let b = Arc::new(Mutex::new(Disk::default()));
        let mut m = mux(&[("a", &a), ("b", &b)]);
        assert_eq!(m.applied_state().unwrap(), None);
        let c1 = mux_command("a", b"one");
        let c2 = mux_command("b", b"two");
        let batch = [
            Command {
                index: 1,
                term: 1,
                data: &c1,
            },
            Command {
                index: 2,
                term: 1,
                data: &c2,
            },
        ];
        let out = m.apply(&batch, &state(2)).unwrap();
        assert_eq!(out, vec![b"ok 1".to_vec(), b"ok 2".to_vec()]);
        assert_eq!(a.lock().unwrap().applied, vec![(1, b"one".to_vec())]);
        assert_eq!(b.lock().unwrap().applied, vec![(2, b"two".to_vec())]);
        assert_eq!(
            m.applied_state().unwrap(),
            Some(state(2).as_bytes().to_vec())
        );

        // The next batch reached part "a" on disk, then the node crashed before "b" stored it.
        let c3 = mux_command("a", b"three");
        let c4 = mux_command("b", b"four");
        let batch = [
            Command {
                index: 3,
                term: 1,
                data: &c3,
            },
            Command {
                index: 4,
                term: 1,
                data: &c4,
            },
        ];
        {
            let mut only_a = mux(&[("a", &a)]);
            only_a.apply(&batch, &state(4)).unwrap();
        }
        // Restart: the Mux reports the lowest part (b at 2); zeroraft replays 3 and 4.
        let mut m = mux(&[("a", &a), ("b", &b)]);
        assert_eq!(
            m.applied_state().unwrap(),
            Some(state(2).as_bytes().to_vec())
        );
        let out = m.apply(&batch, &state(4)).unwrap();
        assert_eq!(out[1], b"ok 4".to_vec());
        assert_eq!(
            a.lock().unwrap().applied,
            vec![(1, b"one".to_vec()), (3, b"three".to_vec())],
            "part a must not apply 3 twice"
        );
        assert_eq!(
            b.lock().unwrap().applied,
            vec![(2, b"two".to_vec()), (4, b"four".to_vec())]
        );
        assert_eq!(
            m.applied_state().unwrap(),
            Some(state(4).as_bytes().to_vec())
        );

        // A batch that ends below a part's position (replayed in pieces) leaves that part
        // where it is rather than moving it back.
        let a_ahead = Arc::new(Mutex::new(Disk {
            applied: vec![(5, b"x".to_vec())],
            state: Some(state(6).as_bytes().to_vec()),
        }));
        let b_behind = Arc::new(Mutex::new(Disk {
            applied: vec![],
            state: Some(state(4).as_bytes().to_vec()),
        }));
        let mut m = mux(&[("a", &a_ahead), ("b", &b_behind)]);
        let c5 = mux_command("a", b"x");
        m.apply(
            &[Command {
                index: 5,
                term: 1,
                data: &c5,
            }],
            &state(5),
        )
        .unwrap();
        assert_eq!(
            a_ahead.lock().unwrap().state,
            Some(state(6).as_bytes().to_vec())
        );
        assert_eq!(a_ahead.lock().unwrap().applied.len(), 1);
        assert_eq!(
            b_behind.lock().unwrap().state,
            Some(state(5).as_bytes().to_vec())
        );
    }

    #[test]
    fn a_command_for_an_unknown_part_or_malformed_is_refused_not_an_error() {
        let a = Arc::new(Mutex::new(Disk::default()));
        let mut m = mux(&[("a", &a)]);
        let unknown = mux_command("nope", b"x");
        let ok = mux_command("a", b"y");
        let batch = [
            Command {
                index: 1,
                term: 1,
                data: &unknown,
            },
            Command {
                index: 2,
                term: 1,
                data: &[],
            },
            Command {
                index: 3,
                term: 1,
                data: &[9, b'a'],
            },
            Command {
                index: 4,
                term: 1,
                data: &ok,
            },
        ];
        let out = m.apply(&batch, &state(4)).unwrap();
        let why = mux_refusal(&out[0]).expect("refused");
        assert!(why.contains("\"nope\""), "{why}");
        assert!(mux_refusal(&out[1]).unwrap().contains("empty"));
        assert!(mux_refusal(&out[2]).unwrap().contains("truncated"));
        assert_eq!(mux_refusal(&out[3]), None);
        assert_eq!(a.lock().unwrap().applied, vec![(4, b"y".to_vec())]);
        assert_eq!(a.lock().unwrap().state, Some(state(4).as_bytes().to_vec()));
    }

    #[test]
    fn a_snapshot_round_trips_and_one_missing_a_part_is_refused_by_name() {
        let a = Arc::new(Mutex::new(Disk::default()));
        let b = Arc::new(Mutex::new(Disk::default()));
        let mut m = mux(&[("a", &a), ("b", &b)]);
        let c1 = mux_command("a", b"one");
        let c2 = mux_command("b", b"two");
        m.apply(
            &[
                Command {
                    index: 1,
                    term: 1,
                    data: &c1,
                },
                Command {
                    index: 2,
                    term: 1,
                    data: &c2,
                },
            ],
            &state(2),
        )
        .unwrap();
        let mut snap = Vec::new();
        m.snapshot(&mut snap).unwrap();

        let a2 = Arc::new(Mutex::new(Disk::default()));
        let b2 = Arc::new(Mutex::new(Disk::default()));
        let mut other = mux(&[("a", &a2), ("b", &b2)]);
        other.install(&mut snap.as_slice(), &state(2)).unwrap();
        assert_eq!(a2.lock().unwrap().applied, a.lock().unwrap().applied);
        assert_eq!(b2.lock().unwrap().applied, b.lock().unwrap().applied);
        assert_eq!(
            other.applied_state().unwrap(),
            Some(state(2).as_bytes().to_vec())
        );

        let c = Arc::new(Mutex::new(Disk::default()));
        let mut bigger = mux(&[
            ("a", &Arc::new(Mutex::new(Disk::default()))),
            ("b", &b2),
            ("c", &c),
        ]);
        let e = bigger.install(&mut snap.as_slice(), &state(2)).unwrap_err();
        assert!(e.to_string().contains("no part \"c\""), "{e}");
        assert_eq!(c.lock().unwrap().state, None, "nothing installed");

        let mut smaller = mux(&[("a", &Arc::new(Mutex::new(Disk::default())))]);
        let e = smaller
            .install(&mut snap.as_slice(), &state(2))
            .unwrap_err();
        assert!(e.to_string().contains("\"b\""), "{e}");

        let e = other
            .install(&mut &snap[..snap.len() - 1], &state(2))
            .unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
