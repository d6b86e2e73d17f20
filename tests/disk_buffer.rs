//! Model test of the disk queue: random sequences of push / read / ack /
//! flush / clean reopen / crash / crash with a torn tail, checked against a
//! model of what must (and must not) be read.
//!
//! Invariants checked:
//! - every record read has the payload it was pushed with, is read at most
//!   once per session and in increasing id order;
//! - a record whose ack was flushed (or acked in this session) is never read;
//! - before `read_next` answers "nothing more", every pushed and not-acked
//!   record was read, except records that were not yet fsync'd when a crash
//!   tore the tail of the newest segment;
//! - after a clean reopen nothing at all is lost.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logship::buffer::disk::{Options, PushError, Queue, Stats};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Push(usize),
    Read,
    Ack(usize),
    Flush,
    Reopen,
    Crash,
    CrashTornTail(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..1500).prop_map(Op::Push),
        5 => Just(Op::Read),
        4 => any::<usize>().prop_map(Op::Ack),
        2 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => (1u64..3000).prop_map(Op::CrashTornTail),
    ]
}

fn segment_lens(dir: &Path) -> HashMap<PathBuf, u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect()
}

struct Model {
    pushed: BTreeMap<u64, Vec<u8>>,
    /// Pushed before the last flush: must survive any crash.
    durable: BTreeSet<u64>,
    acked_persisted: BTreeSet<u64>,
    acked_volatile: BTreeSet<u64>,
    /// Not durable when a crash tore the tail: may be gone.
    maybe_lost: BTreeSet<u64>,
    /// Acked, but the ack was not flushed before a crash: may be read again
    /// (or not, if its segment was deleted already).
    redeliverable: BTreeSet<u64>,
    read_session: BTreeSet<u64>,
    read_unacked: Vec<u64>,
    last_read: Option<u64>,
    flushed_lens: HashMap<PathBuf, u64>,
    counter: u64,
}

impl Model {
    fn acked(&self, id: u64) -> bool {
        self.acked_persisted.contains(&id) || self.acked_volatile.contains(&id)
    }
    fn new_session(&mut self) {
        self.read_session.clear();
        self.read_unacked.clear();
        self.last_read = None;
    }
}

fn open(dir: &Path, opts: Options) -> Queue {
    Queue::open(dir, opts, Arc::new(Stats::default())).unwrap()
}

fn run(ops: Vec<Op>, max_bytes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        max_bytes,
        segment_bytes: 4096,
    };
    let mut q = open(dir.path(), opts);
    let mut m = Model {
        pushed: BTreeMap::new(),
        durable: BTreeSet::new(),
        acked_persisted: BTreeSet::new(),
        acked_volatile: BTreeSet::new(),
        maybe_lost: BTreeSet::new(),
        redeliverable: BTreeSet::new(),
        read_session: BTreeSet::new(),
        read_unacked: Vec::new(),
        last_read: None,
        flushed_lens: HashMap::new(),
        counter: 0,
    };
    let mut buf = Vec::new();
    for op in ops.into_iter().chain([Op::Reopen]) {
        match op {
            Op::Push(len) => {
                m.counter += 1;
                let payload: Vec<u8> = (0..len)
                    .map(|i| (m.counter as usize * 31 + i) as u8)
                    .collect();
                match q.push(&payload) {
                    Ok(id) => {
                        if m.pushed.contains_key(&id) {
                            assert!(m.maybe_lost.contains(&id), "id {id} reissued while alive");
                            assert!(!m.read_session.contains(&id));
                            m.maybe_lost.remove(&id);
                            // The id names a new record now.
                            m.acked_persisted.remove(&id);
                            m.redeliverable.remove(&id);
                            m.durable.remove(&id);
                        }
                        m.pushed.insert(id, payload);
                    }
                    Err(PushError::Full) => assert!(q.has_unacked(), "full while empty"),
                    Err(e) => panic!("push: {e}"),
                }
            }
            Op::Read => match q.read_next(&mut buf).unwrap() {
                Some(id) => {
                    assert_eq!(m.pushed.get(&id), Some(&buf), "payload of {id}");
                    assert!(!m.acked(id), "acked record {id} read again");
                    assert!(m.read_session.insert(id), "record {id} read twice");
                    assert!(m.last_read.is_none_or(|l| l < id), "out of order: {id}");
                    m.last_read = Some(id);
                    m.redeliverable.remove(&id);
                    m.read_unacked.push(id);
                }
                None => {
                    let missing: Vec<u64> = m
                        .pushed
                        .keys()
                        .copied()
                        .filter(|id| !m.acked(*id) && !m.read_session.contains(id))
                        .collect();
                    for id in missing {
                        if m.redeliverable.remove(&id) {
                            // Its ack took effect after all (its segment was deleted).
                            m.acked_persisted.insert(id);
                            continue;
                        }
                        assert!(
                            m.maybe_lost.contains(&id),
                            "record {id} pushed, not acked, durable, but not read"
                        );
                        m.pushed.remove(&id);
                    }
                }
            },
            Op::Ack(i) => {
                if !m.read_unacked.is_empty() {
                    let id = m.read_unacked.swap_remove(i % m.read_unacked.len());
                    q.ack(id);
                    m.acked_volatile.insert(id);
                }
            }
            Op::Flush => {
                q.flush().unwrap();
                let alive: Vec<u64> = m
                    .pushed
                    .keys()
                    .copied()
                    .filter(|id| !m.maybe_lost.contains(id))
                    .collect();
                m.durable.extend(alive);
                m.acked_persisted.append(&mut m.acked_volatile);
                m.flushed_lens = segment_lens(dir.path());
            }
            Op::Reopen => {
                q.flush().unwrap();
                drop(q);
                let alive: Vec<u64> = m
                    .pushed
                    .keys()
                    .copied()
                    .filter(|id| !m.maybe_lost.contains(id))
                    .collect();
                m.durable.extend(alive);
                m.acked_persisted.append(&mut m.acked_volatile);
                q = open(dir.path(), opts);
                m.flushed_lens = segment_lens(dir.path());
                m.new_session();
            }
            Op::Crash | Op::CrashTornTail(_) => {
                drop(q);
                m.redeliverable.append(&mut m.acked_volatile);
                if let Op::CrashTornTail(cut) = op {
                    let lens = segment_lens(dir.path());
                    if let Some((newest, len)) = lens.iter().max_by_key(|(p, _)| (*p).clone()) {
                        let floor = m.flushed_lens.get(newest).copied().unwrap_or(0);
                        let new_len = len.saturating_sub(cut).max(floor);
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(newest)
                            .unwrap()
                            .set_len(new_len)
                            .unwrap();
                    }
                    for id in m.pushed.keys() {
                        if !m.durable.contains(id) && !m.acked_persisted.contains(id) {
                            m.maybe_lost.insert(*id);
                        }
                    }
                }
                q = open(dir.path(), opts);
                m.new_session();
            }
        }
    }
    // Final check after a clean reopen: read everything.
    while let Some(id) = q.read_next(&mut buf).unwrap() {
        assert_eq!(m.pushed.get(&id), Some(&buf));
        assert!(!m.acked(id), "acked record {id} read after clean reopen");
        m.read_session.insert(id);
    }
    for (id, _) in m.pushed.iter() {
        assert!(
            m.acked(*id)
                || m.read_session.contains(id)
                || m.maybe_lost.contains(id)
                || m.redeliverable.contains(id),
            "record {id} lost"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn queue_model(ops in prop::collection::vec(op(), 1..200)) {
        run(ops, 1 << 30);
    }

    #[test]
    fn queue_model_small_buffer(ops in prop::collection::vec(op(), 1..200)) {
        run(ops, 16 << 10);
    }
}
