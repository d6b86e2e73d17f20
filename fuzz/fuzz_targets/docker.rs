#![no_main]
//! Arbitrary bytes as a docker json-file: no panic, lines tile the input,
//! limits hold, and each line that serde_json reads agrees with our scanner.

use libfuzzer_sys::fuzz_target;
use logship::config::SourceFormat;

fuzz_target!(|data: &[u8]| {
    logship_fuzz::check(SourceFormat::Docker, data);
    for line in data.get(2..).unwrap_or_default().split(|&b| b == b'\n') {
        logship_fuzz::check_docker_against_serde(line);
    }
});
