#![no_main]
//! Arbitrary bytes with format auto-detection: same invariants as `cri`.

use libfuzzer_sys::fuzz_target;
use logship::config::SourceFormat;

fuzz_target!(|data: &[u8]| logship_fuzz::check(SourceFormat::Auto, data));
