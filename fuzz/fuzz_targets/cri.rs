#![no_main]
//! Arbitrary bytes as a CRI file: no panic, lines tile the input, limits hold.

use libfuzzer_sys::fuzz_target;
use logship::config::SourceFormat;

fuzz_target!(|data: &[u8]| logship_fuzz::check(SourceFormat::Cri, data));
