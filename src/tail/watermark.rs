//! The ack watermark of one followed file.
//!
//! A follower ships a file as a sequence of spans; each span covers the byte
//! range that ends at its `end` offset. Downstream acknowledges spans in any
//! order (several bulk requests are in flight at once), but a checkpoint may
//! only move past lines that are durably owned downstream. [`AckWatermark`]
//! keeps the issued spans in order and reports the committed offset: the `end`
//! of the longest run of acknowledged spans from the start, never the end of
//! the newest acknowledgement.
//!
//! A new file generation (copytruncate) starts a new sequence: the queue is
//! emptied, the committed offset goes back to 0, and acknowledgements of spans
//! of an older generation are ignored.
//!
//! Memory: one small entry per span in flight; bounded by the pipeline's
//! bounded channels.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::encode::IndexTemplate;
use crate::event::Generation;

/// What decides the index of a span's lines besides the lines themselves:
/// the read time that plain lines take as `@timestamp` (one hour of it:
/// a span never holds lines read in two hours) and the index templates
/// resolved from the file's metadata. Kept for spans not yet committed, so
/// that a line read again after a restart lands in the index of its first
/// copy.
#[derive(Debug)]
pub struct SpanStamp {
    /// Read time (Unix seconds) of the span's first line.
    pub secs: i64,
    /// `FileContext::index` of the span's lines.
    pub index: Option<Arc<[IndexTemplate; 3]>>,
}

impl SpanStamp {
    /// Same hour of read time and same index templates.
    pub fn same_index(&self, other: &SpanStamp) -> bool {
        self.secs.div_euclid(3600) == other.secs.div_euclid(3600)
            && match (&self.index, &other.index) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    Arc::ptr_eq(a, b)
                        || a.iter()
                            .zip(b.iter())
                            .all(|(x, y)| x.as_str() == y.as_str())
                }
                _ => false,
            }
    }
}

#[derive(Debug)]
struct IssuedSpan {
    end: u64,
    /// Hash of the bytes just before `end` (see `identity::tail_hash`).
    tail: Option<u64>,
    stamp: Option<Arc<SpanStamp>>,
    acked: bool,
}

/// Issued spans of one file and the offset they have committed so far.
#[derive(Debug)]
pub struct AckWatermark {
    generation: Generation,
    committed: u64,
    /// Hash of the bytes just before `committed`, when known.
    committed_tail: Option<u64>,
    /// End of the newest span issued (or the start offset).
    issued_end: u64,
    /// Sequence number of the first entry of `pending`.
    first_seq: u64,
    pending: VecDeque<IssuedSpan>,
}

impl AckWatermark {
    /// A watermark whose committed offset starts at `offset` in `generation`
    /// (where the follower started reading).
    pub fn new(generation: Generation, offset: u64) -> Self {
        AckWatermark {
            generation,
            committed: offset,
            committed_tail: None,
            issued_end: offset,
            first_seq: 0,
            pending: VecDeque::new(),
        }
    }

    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// End of the longest run of acknowledged spans from the start.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Hash of the bytes just before [`AckWatermark::committed`], if known.
    pub fn committed_tail(&self) -> Option<u64> {
        self.committed_tail
    }

    /// End of the newest span issued in this generation (at least the
    /// committed offset): bytes up to here are known to exist.
    pub fn issued_end(&self) -> u64 {
        self.issued_end
    }

    /// The spans past the committed offset (acknowledged or not: a restart
    /// reads them all again) as runs of one stamp: `(end of the run, its
    /// stamp)`, in order.
    pub fn stamp_runs(&self) -> Vec<(u64, Arc<SpanStamp>)> {
        let mut runs: Vec<(u64, Arc<SpanStamp>)> = Vec::new();
        for span in &self.pending {
            let Some(stamp) = &span.stamp else { continue };
            match runs.last_mut() {
                Some((end, last)) if last.same_index(stamp) => *end = span.end,
                _ => runs.push((span.end, stamp.clone())),
            }
        }
        runs
    }

    /// Spans issued and not yet part of the committed prefix.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Starts a new generation at offset 0; spans of the old one no longer count.
    pub fn reset(&mut self, generation: Generation) {
        self.generation = generation;
        self.committed = 0;
        self.committed_tail = None;
        self.issued_end = 0;
        self.first_seq += self.pending.len() as u64;
        self.pending.clear();
    }

    /// Registers a span ending at `end` and returns its sequence number.
    /// A span of a different generation than the current one resets first.
    pub fn issue(&mut self, generation: Generation, end: u64) -> u64 {
        self.issue_with_tail(generation, end, None, None)
    }

    /// [`AckWatermark::issue`], with the hash of the bytes before `end`
    /// (stored with the checkpoint once the span is committed) and the
    /// span's stamp.
    pub fn issue_with_tail(
        &mut self,
        generation: Generation,
        end: u64,
        tail: Option<u64>,
        stamp: Option<Arc<SpanStamp>>,
    ) -> u64 {
        if generation != self.generation {
            self.reset(generation);
        }
        let seq = self.first_seq + self.pending.len() as u64;
        self.issued_end = self.issued_end.max(end);
        self.pending.push_back(IssuedSpan {
            end,
            tail,
            stamp,
            acked: false,
        });
        seq
    }

    /// Marks span `seq` of `generation` acknowledged. Returns true if the
    /// committed offset moved. Unknown, repeated or old-generation
    /// acknowledgements are ignored.
    pub fn ack(&mut self, generation: Generation, seq: u64) -> bool {
        if generation != self.generation || seq < self.first_seq {
            return false;
        }
        let Ok(index) = usize::try_from(seq - self.first_seq) else {
            return false;
        };
        let Some(span) = self.pending.get_mut(index) else {
            return false;
        };
        span.acked = true;
        let mut moved = false;
        while self.pending.front().is_some_and(|s| s.acked) {
            if let Some(span) = self.pending.pop_front() {
                self.committed = span.end;
                self.committed_tail = span.tail;
                self.first_seq += 1;
                moved = true;
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_acks_advance_to_each_end() {
        let mut w = AckWatermark::new(0, 10);
        let a = w.issue(0, 100);
        let b = w.issue(0, 200);
        assert_eq!(w.committed(), 10);
        assert!(w.ack(0, a));
        assert_eq!(w.committed(), 100);
        assert!(w.ack(0, b));
        assert_eq!(w.committed(), 200);
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn out_of_order_ack_waits_for_the_gap() {
        let mut w = AckWatermark::new(0, 0);
        let ends = [100, 250, 300, 420];
        let seqs: Vec<u64> = ends.iter().map(|&e| w.issue(0, e)).collect();
        // The newest span is acked first: nothing is committed.
        assert!(!w.ack(0, seqs[3]));
        assert!(!w.ack(0, seqs[1]));
        assert_eq!(w.committed(), 0);
        // The first one fills the gap up to the second.
        assert!(w.ack(0, seqs[0]));
        assert_eq!(w.committed(), ends[1]);
        // The third one joins the run up to the fourth.
        assert!(w.ack(0, seqs[2]));
        assert_eq!(w.committed(), ends[3]);
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn repeated_and_unknown_acks_are_ignored() {
        let mut w = AckWatermark::new(0, 0);
        let a = w.issue(0, 50);
        assert!(w.ack(0, a));
        assert!(!w.ack(0, a));
        assert!(!w.ack(0, a + 7));
        assert_eq!(w.committed(), 50);
        let b = w.issue(0, 80);
        assert_eq!(b, a + 1, "sequence numbers continue after acks");
        assert!(w.ack(0, b));
        assert_eq!(w.committed(), 80);
    }

    #[test]
    fn generation_change_resets_and_ignores_old_acks() {
        let mut w = AckWatermark::new(3, 0);
        let old_a = w.issue(3, 100);
        let old_b = w.issue(3, 200);
        assert!(w.ack(3, old_a));
        assert_eq!(w.committed(), 100);

        // The file was truncated: generation 4 starts at 0.
        let new_a = w.issue(4, 30);
        assert_eq!(w.generation(), 4);
        assert_eq!(w.committed(), 0);
        assert!(
            !w.ack(3, old_b),
            "an old generation's ack must not move the new one"
        );
        assert_eq!(w.committed(), 0);
        assert!(w.ack(4, new_a));
        assert_eq!(w.committed(), 30);
    }

    #[test]
    fn explicit_reset_starts_at_zero() {
        let mut w = AckWatermark::new(0, 500);
        let a = w.issue(0, 600);
        w.reset(1);
        assert_eq!(w.committed(), 0);
        assert_eq!(w.in_flight(), 0);
        assert!(!w.ack(0, a));
        let b = w.issue(1, 10);
        assert!(w.ack(1, b));
        assert_eq!(w.committed(), 10);
    }
}
