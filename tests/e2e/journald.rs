//! journald sources, end to end, without a running systemd:
//! `systemd-journal-remote` writes real journal files from export-format
//! input made here, while the real agent follows the directory with
//! `journalctl` and ships to the real Elasticsearch. Every entry is
//! matched by its unique `TEST_ID` field: each one the filter keeps must
//! be indexed exactly once with the right fields, and nothing else.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::expect::DELIVERY_TIMEOUT;
use crate::scenario;
use crate::support::agent_http::{free_port, scrape, value, wait_get};
use crate::support::elasticsearch::Elasticsearch;
use crate::support::logship::{Agent, Options, Setup};

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";
const BOOT_A: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
const BOOT_B: &str = "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1";
/// 2026-11-26T01:00:00Z in microseconds.
const BASE_USEC: u64 = 1_795_654_800_000_000;

/// One journal entry the test writes.
#[derive(Clone, Debug)]
struct Entry {
    n: u64,
    id: String,
    boot: &'static str,
    unit: &'static str,
    realtime: u64,
    priority: u8,
    pid: u32,
    message: Vec<u8>,
}

impl Entry {
    fn numbered(prefix: &str, n: u64, boot: &'static str) -> Entry {
        let unit = if n % 7 == 3 {
            "noise.service"
        } else {
            "app.service"
        };
        let message = match n % 1000 {
            // Not UTF-8 (and a NUL): a binary field.
            17 => format!("binary {n} ")
                .into_bytes()
                .into_iter()
                .chain([0xff, 0x00, 0xfe])
                .collect(),
            // UTF-8 with a newline: binary in export format, text in JSON.
            29 => format!("two lines {n}\nsecond line ✓").into_bytes(),
            _ => format!("{prefix} entry {n} from {unit}").into_bytes(),
        };
        Entry {
            n,
            id: format!("{prefix}-{n:06}"),
            boot,
            unit,
            realtime: BASE_USEC + n * 1000 + n % 997,
            priority: (n % 8) as u8,
            pid: 1000 + (n % 50) as u32,
            message,
        }
    }

    fn export(&self, out: &mut Vec<u8>) {
        // Increasing within a boot, as the kernel's clock is (journald
        // seeks by boot id and monotonic time too).
        let monotonic = 1_000_000 + self.n * 1000;
        let text = |out: &mut Vec<u8>, name: &str, value: &str| {
            out.extend_from_slice(format!("{name}={value}\n").as_bytes());
        };
        text(out, "__REALTIME_TIMESTAMP", &self.realtime.to_string());
        text(out, "__MONOTONIC_TIMESTAMP", &monotonic.to_string());
        text(out, "_BOOT_ID", self.boot);
        text(out, "_SYSTEMD_UNIT", self.unit);
        text(out, "_HOSTNAME", "journal-host");
        text(out, "_PID", &self.pid.to_string());
        text(out, "PRIORITY", &self.priority.to_string());
        text(out, "TEST_ID", &self.id);
        out.extend_from_slice(b"MESSAGE\n");
        out.extend_from_slice(&(self.message.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.message);
        out.extend_from_slice(b"\n\n");
    }
}

/// Appends `entries` to the journal file `file` with systemd-journal-remote.
fn journal_remote(file: &Path, entries: &[Entry]) {
    let mut input = Vec::new();
    for e in entries {
        e.export(&mut input);
    }
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", file.display()))
        .arg("--compress=no")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {JOURNAL_REMOTE} (apt-get install systemd-journal-remote): {e}")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write export input");
    let out = child.wait_with_output().expect("journal-remote");
    assert!(
        out.status.success(),
        "journal-remote failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a config with one journald source following `journal` (its
/// keys plus `extra`, and `top` at the top level) and returns the HTTP port.
fn configure(setup: &Setup, journal: &Path, extra: &str, top: &str) -> u16 {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let yaml = format!(
        r#"node_name: e2e-node
data_dir: {data}
http: {{listen: "{listen}"}}
{top}sources:
  - name: host
    journald:
      directory: {journal}
{extra}sink:
  elasticsearch:
    hosts: ["{url}"]
    index: "{index}"
    batch: {{max_bytes: 1048576, max_events: 500, timeout: 200ms}}
"#,
        data = setup.data_dir().display(),
        journal = journal.display(),
        url = setup.es_url,
        index = setup.index_template,
    );
    std::fs::write(setup.config_path(), yaml).expect("write config");
    port
}

/// Every expected entry exactly once (by `journald.TEST_ID`), with its
/// fields; no other document.
fn assert_entries_once(es: &Elasticsearch, setup: &Setup, expected: &[Entry], agent: &mut Agent) {
    wait_while_progressing(es, &setup.index_pattern, expected.len() as u64, agent);
    std::thread::sleep(Duration::from_millis(1500));
    let docs = es.search_all(&setup.index_pattern);
    let mut by_id: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for d in &docs {
        let id = d["journald"]["TEST_ID"]
            .as_str()
            .unwrap_or("<none>")
            .to_owned();
        by_id.entry(id).or_default().push(d);
    }
    let mut problems = Vec::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    for e in expected {
        let Some(found) = by_id.remove(&e.id) else {
            problems.push(format!("missing: {}", e.id));
            continue;
        };
        if found.len() != 1 {
            problems.push(format!("{} indexed {} times", e.id, found.len()));
        }
        let d = found[0];
        let want_ts = format!(
            "{}.{:06}",
            chrono_like(e.realtime / 1_000_000),
            e.realtime % 1_000_000
        );
        let checks: [(&str, bool); 7] = [
            (
                "@timestamp",
                d["@timestamp"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(&want_ts)),
            ),
            ("systemd.unit", d["systemd"]["unit"] == e.unit),
            (
                "log.syslog.priority",
                d["log"]["syslog"]["priority"] == e.priority,
            ),
            ("process.pid", d["process"]["pid"] == e.pid),
            ("host.hostname", d["host"]["hostname"] == "journal-host"),
            ("journald._BOOT_ID", d["journald"]["_BOOT_ID"] == e.boot),
            (
                "message",
                match std::str::from_utf8(&e.message) {
                    Ok(text) => d["message"] == text,
                    Err(_) => {
                        d["log"]["flags"] == serde_json::json!(["invalid_utf8"])
                            && d["journald"]["base64"]["MESSAGE"]
                                .as_str()
                                .and_then(|s| b64.decode(s).ok())
                                .is_some_and(|raw| raw == e.message)
                    }
                },
            ),
        ];
        for (field, ok) in checks {
            if !ok {
                problems.push(format!("{}: wrong {field}: {d}", e.id));
            }
        }
    }
    for (id, found) in &by_id {
        problems.push(format!("not expected but indexed {}×: {id}", found.len()));
    }
    if !problems.is_empty() {
        let shown: Vec<&String> = problems.iter().take(15).collect();
        panic!(
            "{} problem(s) in {} documents for {} entries:\n{shown:#?}\n--- logship stderr ---\n{}",
            problems.len(),
            docs.len(),
            expected.len(),
            agent.stderr_tail(40)
        );
    }
}

/// Waits until `index` holds `n` documents, as long as the count keeps
/// growing (a loaded machine indexes slowly; a stalled agent fails after
/// [`DELIVERY_TIMEOUT`] without progress).
fn wait_while_progressing(es: &Elasticsearch, index: &str, n: u64, agent: &mut Agent) -> u64 {
    let mut last = (es.count(index), Instant::now());
    loop {
        agent.assert_running();
        let count = es.count(index);
        if count >= n {
            return count;
        }
        if count != last.0 {
            last = (count, Instant::now());
        } else if last.1.elapsed() > DELIVERY_TIMEOUT {
            return count;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of Unix seconds (UTC).
fn chrono_like(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A journald counter of source `host` from `/metrics`.
fn journald_counter(port: u16, agent: &mut Agent, name: &str, reason: Option<&str>) -> Option<f64> {
    let scrape = scrape(port, agent);
    let mut labels = vec![("source", "host")];
    if let Some(r) = reason {
        labels.push(("reason", r));
    }
    value(&scrape, name, &labels)
}

/// Waits until the index holds more than `at_least` documents (and fewer
/// than `all`): the agent is shipping.
fn wait_mid_stream(
    es: &Elasticsearch,
    index: &str,
    at_least: u64,
    all: u64,
    agent: &mut Agent,
) -> u64 {
    let started = Instant::now();
    loop {
        agent.assert_running();
        let n = es.count(index);
        if n > at_least || started.elapsed() > DELIVERY_TIMEOUT {
            assert!(
                n < all,
                "everything was shipped before the kill ({n}); not mid-stream"
            );
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn journal_dir(setup: &Setup) -> PathBuf {
    let dir = setup.root().join("journal");
    std::fs::create_dir_all(&dir).expect("mkdir journal");
    dir
}

#[test]
fn journald_two_boots_unit_filter_binary_fields_kill_9_and_child_death_exactly_once() {
    let (es, setup) = scenario("journald-boots", Options::default());
    let journal = journal_dir(&setup);
    let file = journal.join("system.journal");
    let port = configure(&setup, &journal, "      units: [app]\n", "");
    let all: Vec<Entry> = (0..50_000)
        .map(|n| Entry::numbered("jd", n, if n < 25_000 { BOOT_A } else { BOOT_B }))
        .collect();
    let expected: Vec<Entry> = all
        .iter()
        .filter(|e| e.unit == "app.service")
        .cloned()
        .collect();
    let total = expected.len() as u64;

    journal_remote(&file, &all[..20_000]);
    let mut agent = setup.start();
    // kill -9 while the first boot's entries are being shipped.
    wait_mid_stream(es, &setup.index_pattern, 2_000, total, &mut agent);
    agent.kill_9();
    journal_remote(&file, &all[20_000..35_000]);
    agent.restart();
    let before = es.count(&setup.index_pattern);
    wait_mid_stream(es, &setup.index_pattern, before + 1_000, total, &mut agent);
    // journalctl dies under the agent: it is started again after the last
    // entry read.
    let children = agent.children_named("journalctl");
    assert!(!children.is_empty(), "no journalctl child found");
    for pid in &children {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
    let started = Instant::now();
    loop {
        let restarts = journald_counter(port, &mut agent, "logship_journald_restarts_total", None);
        let again = agent.children_named("journalctl");
        if restarts == Some(1.0) && !again.is_empty() && again != children {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "journalctl not restarted and counted once ({restarts:?}, {again:?}):\n{}",
            agent.stderr_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    journal_remote(&file, &all[35_000..42_000]);
    let before = es.count(&setup.index_pattern);
    wait_mid_stream(es, &setup.index_pattern, before + 1_000, total, &mut agent);
    agent.kill_9();
    journal_remote(&file, &all[42_000..]);
    agent.restart();
    assert_entries_once(es, &setup, &expected, &mut agent);

    let (code, body) = wait_get(port, "/api/v1/journals", &mut agent);
    assert_eq!(code, 200, "{body}");
    let status: Value = serde_json::from_str(&body).expect("/api/v1/journals JSON");
    let host = &status[0];
    assert_eq!(host["source"], "host", "{status}");
    assert_eq!(host["unacked_entries"], 0, "{status}");
    assert_eq!(host["acked_cursor"], host["read_cursor"], "{status}");
    assert!(
        host["acked_cursor"]
            .as_str()
            .is_some_and(|c| c.contains(&format!("b={BOOT_B}"))),
        "{status}"
    );
    let lost = journald_counter(
        port,
        &mut agent,
        "logship_journald_gaps_total",
        Some("vacuumed"),
    );
    assert_eq!(lost, Some(0.0), "no gap in an intact journal");
}

#[test]
fn journald_rotated_and_vacuumed_while_stopped_is_a_counted_logged_loss() {
    let (es, setup) = scenario("journald-vacuum", Options::default());
    let journal = journal_dir(&setup);
    let port = configure(&setup, &journal, "", "");
    let all: Vec<Entry> = (0..3_000)
        .map(|n| Entry::numbered("vac", n, BOOT_A))
        .collect();
    let old = journal.join("system@0000-old.journal");
    journal_remote(&old, &all[..1_000]);
    let mut agent = setup.start();
    assert_eq!(
        wait_while_progressing(es, &setup.index_pattern, 1_000, &mut agent),
        1_000
    );
    std::thread::sleep(Duration::from_millis(1200)); // the cursor is written
    let status = agent.sigterm(Duration::from_secs(30));
    assert!(status.success(), "{}", agent.stderr_tail(30));

    // While stopped: more entries in the old file (never shipped), then a
    // new file (rotation), then the old file removed (vacuum).
    journal_remote(&old, &all[1_000..2_000]);
    journal_remote(&journal.join("system.journal"), &all[2_000..]);
    std::fs::remove_file(&old).expect("vacuum the old file");
    agent.restart();

    let mut expected: Vec<Entry> = all[..1_000].to_vec();
    expected.extend_from_slice(&all[2_000..]);
    assert_entries_once(es, &setup, &expected, &mut agent);
    let gaps = journald_counter(
        port,
        &mut agent,
        "logship_journald_gaps_total",
        Some("vacuumed"),
    );
    assert_eq!(gaps, Some(1.0), "the vacuum is counted");
    let log = agent.stderr_tail(400);
    assert!(
        log.contains("checkpoint's journal entry is gone"),
        "the loss is logged:\n{log}"
    );
}

#[test]
fn journald_through_the_disk_buffer_kill_9_exactly_once() {
    let (es, setup) = scenario("journald-disk", Options::default());
    let journal = journal_dir(&setup);
    let file = journal.join("system.journal");
    configure(
        &setup,
        &journal,
        "",
        "buffer: {type: disk, max_bytes: 64MiB, fsync_interval: 100ms}\n",
    );
    let all: Vec<Entry> = (0..12_000)
        .map(|n| Entry::numbered("disk", n, if n < 6_000 { BOOT_A } else { BOOT_B }))
        .collect();
    journal_remote(&file, &all[..8_000]);
    let mut agent = setup.start();
    wait_mid_stream(
        es,
        &setup.index_pattern,
        1_000,
        all.len() as u64,
        &mut agent,
    );
    // Entries fsync'd into the buffer have moved the cursor; what the
    // buffer holds is sent after the restart, the rest read again.
    agent.kill_9();
    journal_remote(&file, &all[8_000..]);
    agent.restart();
    assert_entries_once(es, &setup, &all, &mut agent);
}
