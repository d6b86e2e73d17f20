#![no_main]
//! Arbitrary bytes as a disk-buffer segment and as a ledger: no panic, the
//! scanner always moves forward (never loops), payloads stay within the
//! record limit and inside the input (no unbounded allocation); a payload
//! that decodes as a batch (either payload version) is consistent: its
//! items, and its bodies' lengths (packed or not), add up.

use libfuzzer_sys::fuzz_target;
use logship::buffer::disk::ledger::Ledger;
use logship::buffer::disk::record::MAX_RECORD_BYTES;
use logship::buffer::disk::segment::{Scanner, Step};
use logship::buffer::disk::stage::decode_batch;

fuzz_target!(|data: &[u8]| {
    if let Some(l) = Ledger::decode(data) {
        assert!(l.acked.iter().all(|&(s, e)| s > l.ack && e > s));
        assert_eq!(Ledger::decode(&l.encode()).as_ref(), Some(&l));
    }
    let mut scanner = Scanner::new();
    let mut payload = Vec::new();
    let mut steps = 0usize;
    loop {
        let before = scanner.pos;
        let step = scanner.next(data, &mut payload).expect("slices do not fail");
        steps += 1;
        assert!(steps <= data.len() + 2, "scanner loops");
        match step {
            Step::End => break,
            Step::Record { id } => {
                assert!(payload.len() <= MAX_RECORD_BYTES && payload.len() <= data.len());
                if let Some(batch) = decode_batch(id, &payload) {
                    assert_eq!(
                        batch.events,
                        batch.spans.iter().map(|s| s.items.len()).sum::<usize>()
                    );
                    match &batch.packed {
                        // Version 2: spans without bodies, nothing sized by
                        // the head's raw length.
                        Some(packed) => {
                            assert!(batch.spans.iter().all(|s| s.body.is_empty()));
                            assert_eq!(packed.lens.len(), batch.spans.len());
                            assert_eq!(packed.lens.iter().sum::<usize>(), batch.body_bytes);
                            assert!(packed.bytes.len() <= payload.len());
                        }
                        None => assert_eq!(
                            batch.spans.iter().map(|s| s.body.len()).sum::<usize>(),
                            batch.body_bytes
                        ),
                    }
                }
            }
            Step::Damaged { at, resumed } => assert!(resumed > at || resumed >= data.len() as u64),
        }
        assert!(scanner.pos > before, "scanner did not move forward");
    }
});
