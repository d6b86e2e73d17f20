//! The ledger: which records were acknowledged.
//!
//! ```text
//! offset size field
//! 0      8    magic   b"LSLEDGER"
//! 8      4    version u32 LE = 1
//! 12     4    n       count of acked ranges above the watermark, <= MAX_ACKED
//! 16     8    ack     watermark: every record id < ack is acknowledged
//! 24     16*n ranges  [start, end) of ids acknowledged out of order, u64 LE each
//! 24+16n 4    crc     CRC32C of bytes 0..24+16n
//! ```
//!
//! Written atomically (temp file, fsync, rename, fsync of the directory).
//! A ledger that is missing, short, of another version or whose CRC fails
//! decodes to `None`: the queue then replays from its oldest segment (the
//! deterministic `_id`s turn the replay into 409s) and says so once.

use std::io::{self, Write};
use std::path::Path;

const MAGIC: [u8; 8] = *b"LSLEDGER";
const VERSION: u32 = 1;
/// Out-of-order ack ranges kept at most; beyond that the newest are forgotten
/// (those records are delivered again after a restart: at-least-once).
pub const MAX_ACKED: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    pub ack: u64,
    /// Disjoint `[start, end)` ranges, sorted, all starting > `ack`.
    pub acked: Vec<(u64, u64)>,
}

impl Ledger {
    pub fn encode(&self) -> Vec<u8> {
        let acked = &self.acked[..self.acked.len().min(MAX_ACKED)];
        let mut v = Vec::with_capacity(28 + 16 * acked.len());
        v.extend_from_slice(&MAGIC);
        v.extend_from_slice(&VERSION.to_le_bytes());
        v.extend_from_slice(&(acked.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.ack.to_le_bytes());
        for (start, end) in acked {
            v.extend_from_slice(&start.to_le_bytes());
            v.extend_from_slice(&end.to_le_bytes());
        }
        let crc = crc32c::crc32c(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    /// `None` if the bytes are not a valid version-1 ledger.
    pub fn decode(b: &[u8]) -> Option<Ledger> {
        if b.len() < 28 || b[0..8] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        if u32_at(8) != VERSION {
            return None;
        }
        let n = u32_at(12) as usize;
        if n > MAX_ACKED || b.len() != 28 + 16 * n {
            return None;
        }
        let body = 24 + 16 * n;
        if crc32c::crc32c(&b[..body]) != u32_at(body) {
            return None;
        }
        let ack = u64_at(16);
        let mut acked: Vec<(u64, u64)> = (0..n)
            .map(|i| (u64_at(24 + 16 * i), u64_at(32 + 16 * i)))
            .filter(|&(s, e)| s > ack && e > s)
            .collect();
        acked.sort_unstable();
        Some(Ledger { ack, acked })
    }

    /// Writes the ledger to `path` atomically.
    pub fn store(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&self.encode())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let l = Ledger {
            ack: 42,
            acked: vec![(44, 45), (47, 50)],
        };
        let b = l.encode();
        assert_eq!(Ledger::decode(&b), Some(l));
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert_eq!(Ledger::decode(&c), None, "flip at byte {i} detected");
        }
        assert_eq!(Ledger::decode(&b[..b.len() - 1]), None);
        assert_eq!(Ledger::decode(b""), None);
    }
}
