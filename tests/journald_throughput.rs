//! How fast a journald source ships, and at what CPU cost (the figures in
//! docs/performance.md, "journald"). Ignored by default; run it on a
//! release build:
//!
//! ```text
//! cargo test --release --test journald_throughput -- --ignored --nocapture
//! ```
//!
//! `systemd-journal-remote` writes ENTRIES journal entries (typical fields,
//! a ~100-byte message) into a directory first; then the release agent
//! ships them from the beginning, through the memory buffer and gzip level
//! 1, to the fake `_bulk` endpoint (`support/fake_es.rs`, which stores every
//! document by `_id`). The run ends when every entry is stored once; it
//! prints the entries per second, the CPU seconds per 100k entries of the
//! agent and of its journalctl child (from `/proc`), and the agent's peak
//! RSS.

#[path = "support/fake_es.rs"]
mod fake_es;
#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_es::FakeEs;
use support::logship::{Options, Setup};

const ENTRIES: u64 = 200_000;

fn export(n: u64, out: &mut Vec<u8>) {
    let unit = ["kubelet.service", "containerd.service", "ssh.service"][(n % 3) as usize];
    out.extend_from_slice(
        format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n\
             _BOOT_ID=0123456789abcdef0123456789abcdef\n_MACHINE_ID=fedcba9876543210fedcba9876543210\n\
             _HOSTNAME=node-1\n_TRANSPORT=stdout\n_SYSTEMD_UNIT={unit}\n_SYSTEMD_CGROUP=/system.slice/{unit}\n\
             _COMM=proc\n_EXE=/usr/bin/proc\n_CMDLINE=/usr/bin/proc --flag\n_UID=0\n_GID=0\n_PID={}\n\
             SYSLOG_IDENTIFIER=proc\nPRIORITY=6\nSYSLOG_FACILITY=3\n\
             MESSAGE=I1126 01:02:03.456789 {n} reconciler.go:123] attempting to mount volume seq={n}\n\n",
            1_795_654_800_000_000 + n * 50,
            1_000_000 + n * 50,
            1000 + n % 100,
        )
        .as_bytes(),
    );
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "a measurement; run on a release build (module doc)"]
fn journald_throughput() {
    // The fake endpoint serves on this runtime's threads; the test blocks.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let es = runtime.block_on(FakeEs::start());
    let setup = Setup::new("journald-throughput", &es.url(), Options::default());
    let journal = setup.root().join("journal");
    std::fs::create_dir_all(&journal).expect("mkdir");
    let mut input = Vec::new();
    for n in 0..ENTRIES {
        export(n, &mut input);
    }
    let mut remote = Command::new("/lib/systemd/systemd-journal-remote")
        .arg(format!(
            "--output={}",
            journal.join("system.journal").display()
        ))
        .arg("-")
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-journal-remote");
    remote
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write");
    assert!(remote.wait().expect("wait").success());
    std::fs::write(
        setup.config_path(),
        format!(
            "node_name: bench\ndata_dir: {}\nsources:\n  - name: host\n    journald: {{directory: {}}}\n\
             sink:\n  elasticsearch:\n    hosts: [\"{}\"]\n    index: bench\n",
            setup.data_dir().display(),
            journal.display(),
            es.url()
        ),
    )
    .expect("config");

    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let started = Instant::now();
    let mut agent = setup.start();
    let pid = agent.pid();
    let mut journalctl = None;
    loop {
        agent.assert_running();
        journalctl = journalctl.or_else(|| agent.children_named("journalctl").first().copied());
        let stored = es.stored_ids().len() as u64;
        if stored >= ENTRIES {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {stored} of {ENTRIES} stored:\n{}",
            agent.stderr_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let agent_cpu = cpu_seconds(pid);
    let child_cpu = journalctl.map_or(0.0, cpu_seconds);
    let hwm = status_kib(pid, "VmHWM:");
    let per_100k = 100_000.0 / ENTRIES as f64;
    println!(
        "journald: {ENTRIES} entries in {elapsed:.2} s = {:.0} entries/s; CPU per 100k entries: \
         logship {:.2} s + journalctl {:.2} s; logship peak RSS {:.1} MiB; \
         load before {} after {}",
        ENTRIES as f64 / elapsed,
        agent_cpu * per_100k,
        child_cpu * per_100k,
        hwm as f64 / 1024.0,
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    let ids = es.stored_ids();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len() as u64, ENTRIES, "each entry stored once");
}
