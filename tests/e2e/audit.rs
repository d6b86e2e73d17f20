//! `logship audit` against real Elasticsearch (issue 16).
//!
//! The agent ships eight files: CRI (with a partial line and health checks a
//! processor drops), docker `json-file` (with a chunked line), plain text
//! with Java traces (multiline), one whose lines go to a write-blocked
//! index (dead-lettered), one that grows after the agent stopped, one
//! rewritten after it stopped, one rotated and compressed (`.gz`) and one
//! copied and truncated (copytruncate) after it stopped. Then the audit must account for every line
//! in the right bucket, per file, field by field in its JSON; after some
//! documents are deleted by `_id`, it must name exactly those as missing,
//! at their offsets, with their text, and exit 1.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::expect::DELIVERY_TIMEOUT;
use crate::scenario;
use crate::support::logship::{
    LOGSHIP_BIN, Options, append, copytruncate, cri_line, cri_split, docker_line, timestamp,
};

/// The source's processors and multiline rule.
const EXTRA: &str = r#"    processors:
      - drop:
          name: health
          when: {regex: {message: 'GET /healthz'}}
    multiline: {rule: java, timeout: 1s}
"#;

/// What one file is made of: its logical lines in order, by offset.
#[derive(Default)]
struct Written {
    bytes: Vec<u8>,
    /// Offset of each logical line shipping makes a document of.
    kept: Vec<u64>,
    /// Offset of each line the processor drops.
    dropped: Vec<u64>,
}

impl Written {
    fn push(&mut self, bytes: &[u8], kept: bool) {
        let offset = self.bytes.len() as u64;
        if kept {
            self.kept.push(offset);
        } else {
            self.dropped.push(offset);
        }
        self.bytes.extend_from_slice(bytes);
    }
}

/// CRI: every 10th line a health check (dropped), line 150 split into
/// three `P`/`F` parts (one line, at its first part's offset), stderr too.
fn cri_file() -> Written {
    let mut w = Written::default();
    for seq in 0..300u64 {
        let ts = timestamp(seq);
        let stream = if seq % 7 == 0 { "stderr" } else { "stdout" };
        if seq % 10 == 5 {
            let m = format!("10.0.0.1 GET /healthz seq={seq}");
            w.push(&cri_line(&ts, stream, "F", m.as_bytes()), false);
        } else if seq == 150 {
            let long = format!("cri seq={seq} {}", "long line ".repeat(5000));
            w.push(&cri_split(&ts, stream, long.as_bytes(), 16 * 1024), true);
        } else {
            let m = format!("cri seq={seq} INFO request handled");
            w.push(&cri_line(&ts, stream, "F", m.as_bytes()), true);
        }
    }
    w
}

/// docker `json-file`: line 40 written as two chunks (one line).
fn docker_file() -> Written {
    let mut w = Written::default();
    for seq in 0..120u64 {
        let ts = timestamp(seq);
        if seq == 40 {
            let mut both = docker_line(&ts, "stdout", &format!("docker seq={seq} first half "));
            both.extend(docker_line(&ts, "stdout", "second half\n"));
            w.push(&both, true);
        } else {
            let log = format!("docker seq={seq} INFO ok\n");
            w.push(&docker_line(&ts, "stdout", &log), true);
        }
    }
    w
}

/// Plain text: every 8th event a Java trace of four lines (one event at its
/// first line's offset); the file ends with a plain line.
fn app_file() -> Written {
    let mut w = Written::default();
    for seq in 0..160u64 {
        if seq % 8 == 3 {
            let trace = format!(
                "java.lang.IllegalStateException: app seq={seq} failed\n\
                 \tat com.example.App.run(App.java:{seq})\n\
                 Caused by: java.io.IOException: disk full\n\
                 \tat com.example.Store.write(Store.java:7)\n"
            );
            w.push(trace.as_bytes(), true);
        } else {
            w.push(format!("app seq={seq} INFO working\n").as_bytes(), true);
        }
    }
    w
}

/// CRI lines of 2020-01-01: their index is write-blocked (dead-lettered).
fn dead_file() -> Written {
    let mut w = Written::default();
    for seq in 0..20u64 {
        let ts = format!("2020-01-01T00:00:{seq:02}.000000000Z");
        let m = format!("dead seq={seq} rejected by the cluster");
        w.push(&cri_line(&ts, "stdout", "F", m.as_bytes()), true);
    }
    w
}

fn cri_numbered(name: &str, seqs: std::ops::Range<u64>, w: &mut Written) {
    for seq in seqs {
        let m = format!("{name} seq={seq} INFO a line");
        w.push(
            &cri_line(&timestamp(seq), "stdout", "F", m.as_bytes()),
            true,
        );
    }
}

/// Runs `logship audit --config … [args]`; returns the exit code and stdout.
fn audit(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(LOGSHIP_BIN)
        .arg("audit")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run logship audit");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "logship audit {args:?} → {:?}\n{stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), stdout)
}

fn audit_json(config: &Path, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let (code, stdout) = audit(config, &all);
    (
        code,
        serde_json::from_str(&stdout).expect("audit --format json prints JSON"),
    )
}

/// The report of the file whose path ends in `name`.
fn file_report<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with(name)))
        .unwrap_or_else(|| panic!("no report for {name} in {report:#}"))
}

/// Asserts the counts of `f` (lines, present, missing, dropped, not yet
/// shipped, dead-lettered, unknown generation).
fn assert_counts(f: &Value, counts: [u64; 7]) {
    let keys = [
        "lines",
        "present",
        "missing",
        "dropped",
        "not_yet_shipped",
        "dead_lettered",
        "unknown_generation",
    ];
    let got: Vec<u64> = keys.iter().map(|k| f[k].as_u64().expect(k)).collect();
    assert_eq!(got, counts, "{keys:?} of {f:#}");
    assert_eq!(f["duplicated"], 0, "{f:#}");
}

#[test]
fn audit_accounts_for_every_line_and_names_exactly_the_deleted_ones() {
    let (es, setup) = scenario(
        "audit",
        Options {
            batch_max_events: 100,
            ..Options::default()
        },
    );
    let yaml = setup.config_yaml().replace(
        "    max_line_bytes:",
        &format!("{EXTRA}    max_line_bytes:"),
    );
    std::fs::write(setup.config_path(), yaml).expect("write config");
    // Lines of 2020-01-01 are refused (403): dead-lettered.
    let blocked = "e2e-audit-2020.01.01";
    es.json(reqwest::Method::PUT, blocked, None);
    es.json(
        reqwest::Method::PUT,
        &format!("{blocked}/_settings"),
        Some(&json!({"index.blocks.write": true})),
    );

    let cri = cri_file();
    let docker = docker_file();
    let app = app_file();
    let dead = dead_file();
    let mut growing = Written::default();
    cri_numbered("growing", 0..100, &mut growing);
    let mut rewritten = Written::default();
    cri_numbered("rewritten", 0..10, &mut rewritten);
    let mut gz = Written::default();
    cri_numbered("gz", 0..50, &mut gz);
    let mut ct = Written::default();
    cri_numbered("ct", 0..40, &mut ct);
    let files: [(&str, &Written); 8] = [
        ("cri.log", &cri),
        ("docker.log", &docker),
        ("app.log", &app),
        ("dead.log", &dead),
        ("growing.log", &growing),
        ("rewritten.log", &rewritten),
        ("gz.log", &gz),
        ("ct.log", &ct),
    ];
    for (name, w) in files {
        std::fs::write(setup.log(name), &w.bytes).expect("write log");
    }
    let indexed: u64 = files
        .iter()
        .filter(|(name, _)| *name != "dead.log")
        .map(|(_, w)| w.kept.len() as u64)
        .sum();

    let mut agent = setup.start();
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let dead_letters = setup.data_dir().join("dead-letter.ndjson");
    loop {
        agent.assert_running();
        let records = std::fs::read_to_string(&dead_letters)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if es.count(&setup.index_pattern) >= indexed && records >= dead.kept.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not shipped in time:\n{}",
            agent.stderr_tail(30)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Let the checkpoints catch up with the last acks, then stop.
    std::thread::sleep(Duration::from_millis(1500));
    agent.sigterm(Duration::from_secs(30));
    assert_eq!(es.count(&setup.index_pattern), indexed, "exactly once");

    // While the agent is down: growing.log grows, docker.log is rotated
    // (kubelet style), gz.log is rotated and compressed (logrotate style),
    // rewritten.log is truncated and written anew, ct.log is copied and
    // truncated (logrotate's copytruncate) and written to again.
    let tail_from = growing.bytes.len() as u64;
    let mut more = Written::default();
    cri_numbered("growing-late", 100..125, &mut more);
    append(&setup.log("growing.log"), &more.bytes);
    let rotated = setup.log("docker.log.20261128-093000");
    std::fs::rename(setup.log("docker.log"), &rotated).expect("rotate");
    std::fs::write(
        setup.log("rewritten.log"),
        "new content, never read\nsecond\nthird\n",
    )
    .expect("rewrite");
    {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(
            std::fs::File::create(setup.log("gz.log.1.gz")).expect("create .gz"),
            flate2::Compression::default(),
        );
        encoder.write_all(&gz.bytes).expect("compress");
        encoder.finish().expect("finish .gz");
        std::fs::remove_file(setup.log("gz.log")).expect("remove gz.log");
    }
    copytruncate(&setup.log("ct.log"), &setup.log("ct.log.1"));
    append(&setup.log("ct.log"), b"after the copytruncate\nand more\n");

    // 1. Everything accounted for: exit 0.
    let (code, report) = audit_json(&setup.config_path(), &[]);
    assert_eq!(code, 0, "{report:#}");
    let f = file_report(&report, "cri.log");
    let n = cri.kept.len() as u64;
    let d = cri.dropped.len() as u64;
    assert_counts(f, [n + d, n, 0, d, 0, 0, 0]);
    assert_eq!(f["generation"], 0);
    assert_eq!(f["bytes"], cri.bytes.len() as u64);
    assert_eq!(f["acknowledged"], cri.bytes.len() as u64);
    assert_eq!(f["missing_offsets"], json!([]));
    assert_eq!(
        f["verdict"],
        format!(
            "OK: {n} of {} lines present; {d} dropped by processors",
            n + d
        )
    );
    let meta = std::fs::metadata(setup.log("cri.log")).expect("stat");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(f["identity"]["ino"], meta.ino());
    assert_eq!(f["identity"]["dev"], meta.dev());

    let f = file_report(&report, "docker.log.20261128-093000");
    assert_counts(f, [120, 120, 0, 0, 0, 0, 0]);
    assert_eq!(
        f["followed_as"].as_str(),
        setup.log("docker.log").to_str(),
        "a rotation is audited under the identity it was followed with"
    );
    let events = app.kept.len() as u64;
    assert_counts(
        file_report(&report, "app.log"),
        [events, events, 0, 0, 0, 0, 0],
    );
    let f = file_report(&report, "dead.log");
    assert_counts(f, [20, 0, 0, 0, 0, 20, 0]);
    assert_eq!(f["verdict"], "OK: 0 of 20 lines present; 20 dead-lettered");
    let f = file_report(&report, "growing.log");
    assert_counts(f, [125, 100, 0, 0, 25, 0, 0]);
    assert_eq!(f["acknowledged"], tail_from);
    assert_eq!(f["not_yet_shipped_from"], tail_from);
    let f = file_report(&report, "rewritten.log");
    assert_counts(f, [3, 0, 0, 0, 0, 0, 3]);
    assert!(
        f["verdict"]
            .as_str()
            .is_some_and(|v| v.starts_with("UNKNOWN GENERATION")),
        "{f:#}"
    );
    let f = file_report(&report, "gz.log.1.gz");
    assert_counts(f, [50, 50, 0, 0, 0, 0, 0]);
    assert_eq!(f["followed_as"].as_str(), setup.log("gz.log").to_str());
    assert_eq!(f["bytes"], gz.bytes.len() as u64, "read decompressed");
    // After copytruncate the copy holds the shipped generation (another
    // inode: found by content); the file holds content of a generation the
    // agent has not read yet.
    let f = file_report(&report, "ct.log.1");
    assert_counts(f, [40, 40, 0, 0, 0, 0, 0]);
    assert_eq!(f["followed_as"].as_str(), setup.log("ct.log").to_str());
    assert_counts(file_report(&report, "ct.log"), [2, 0, 0, 0, 0, 0, 2]);
    assert_eq!(report["totals"]["files"], 9, "{report:#}");
    assert_eq!(report["totals"]["missing"], 0);
    assert_eq!(report["index_pattern"], "e2e-audit-*.*.*");
    // One search per file with a known generation (each under a batch).
    assert_eq!(report["requests"], 7);
    // The old content of rewritten.log is gone from disk.
    assert!(
        report["notes"].to_string().contains("no longer on disk"),
        "{report:#}"
    );

    // Every document in the index is one the audit counted as present.
    let docs = es.search_all(&setup.index_pattern);
    let mut per_file: BTreeMap<String, u64> = BTreeMap::new();
    for doc in &docs {
        let path = doc["log"]["file"]["path"].as_str().unwrap_or_default();
        let name = path.rsplit('/').next().unwrap_or_default().to_string();
        *per_file.entry(name).or_default() += 1;
    }
    assert_eq!(per_file["cri.log"], n);
    assert_eq!(per_file["app.log"], events);

    // 2. Delete documents by `_id`: two CRI lines (one the partial line),
    // a trace (a multiline event) and a plain line of app.log.
    let victims: Vec<(&str, u64)> = vec![
        ("cri.log", cri.kept[0]),
        ("cri.log", cri.kept[135]),
        ("app.log", app.kept[3]),
        ("app.log", app.kept[100]),
    ];
    assert!(
        cri.bytes[cri.kept[135] as usize..].starts_with(timestamp(150).as_bytes()),
        "victim 2 is the partial line"
    );
    let mut deleted: BTreeMap<(&str, u64), String> = BTreeMap::new();
    for &(name, offset) in &victims {
        let doc = docs
            .iter()
            .find(|d| {
                d["log"]["offset"] == offset
                    && d["log"]["file"]["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(&format!("/{name}")))
            })
            .unwrap_or_else(|| panic!("no document for {name}@{offset}"));
        let (index, id) = (
            doc["_index"].as_str().expect("_index"),
            doc["_id"].as_str().expect("_id"),
        );
        let r = es.json(
            reqwest::Method::DELETE,
            &format!("{index}/_doc/{id}?refresh=true"),
            None,
        );
        assert_eq!(r["result"], "deleted", "{r}");
        deleted.insert((name, offset), id.to_string());
    }

    let (code, report) = audit_json(&setup.config_path(), &[]);
    assert_eq!(code, 1, "{report:#}");
    for (name, w) in [("cri.log", &cri), ("app.log", &app)] {
        let f = file_report(&report, name);
        let gone: Vec<(u64, &String)> = deleted
            .iter()
            .filter(|((file, _), _)| *file == name)
            .map(|((_, offset), id)| (*offset, id))
            .collect();
        let offsets: Vec<u64> = gone.iter().map(|(o, _)| *o).collect();
        assert_eq!(f["missing_offsets"], json!(offsets), "{f:#}");
        assert_eq!(f["missing"], gone.len() as u64);
        assert_eq!(
            f["present"],
            w.kept.len() as u64 - gone.len() as u64,
            "{f:#}"
        );
        for (i, (offset, id)) in gone.iter().enumerate() {
            let line = &f["missing_lines"][i];
            assert_eq!(line["offset"], *offset);
            assert_eq!(line["id"], id.as_str());
            let start = *offset as usize;
            let end = w.bytes[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(w.bytes.len(), |p| start + p)
                .min(start + 200);
            assert_eq!(
                line["text"],
                String::from_utf8_lossy(&w.bytes[start..end]).as_ref()
            );
        }
        assert!(
            f["verdict"]
                .as_str()
                .is_some_and(|v| v.starts_with(&format!("MISSING: {} of", gone.len()))),
            "{f:#}"
        );
    }
    assert_eq!(report["totals"]["missing"], 4);
    assert_counts(
        file_report(&report, "growing.log"),
        [125, 100, 0, 0, 25, 0, 0],
    );

    // The text report of everything says so too, file by file.
    let (code, text) = audit(&setup.config_path(), &[]);
    assert_eq!(code, 1);
    assert!(
        text.contains("MISSING: 4 lines in 2 of 9 files are not in Elasticsearch"),
        "{text}"
    );
    assert!(
        text.contains(&format!("not yet shipped from byte {tail_from}")),
        "{text}"
    );

    // The text report of one named file says the same.
    let (code, text) = audit(
        &setup.config_path(),
        &[setup.log("app.log").to_str().expect("utf-8 path")],
    );
    assert_eq!(code, 1);
    assert!(
        text.contains(&format!(
            "missing at bytes {}, {}",
            app.kept[3], app.kept[100]
        )),
        "{text}"
    );
    assert!(
        text.contains("java.lang.IllegalStateException: app seq=3 failed"),
        "{text}"
    );
    assert!(
        text.contains(&format!("MISSING: 2 of {events} lines")),
        "{text}"
    );
    assert!(!text.contains("cri.log"), "only the named file: {text}");

    // A broken config is exit 64.
    let broken = setup.root().join("broken.yaml");
    std::fs::write(&broken, "sources: 7\n").expect("write");
    let (code, _) = audit(&broken, &[]);
    assert_eq!(code, 64);
}

/// The figures of `docs/testing.md`: an audit of a 1 GiB CRI file
/// (`LOGSHIP_AUDIT_MIB`, default 1024) whose first 8 MiB were shipped by
/// the agent and the rest written after it stopped, so every line is
/// looked up: the shipped ones are found, the others are not yet shipped.
/// Prints wall time, the audit process's CPU time, requests and ids/s.
/// Build in release for figures that mean something:
/// `cargo test --release --test e2e audit_1gib_long -- --ignored --nocapture`.
#[test]
#[ignore]
fn audit_1gib_long() {
    use std::io::Write as _;
    let mib: u64 = std::env::var("LOGSHIP_AUDIT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let (es, setup) = scenario("audit-long", Options::default());
    let path = setup.log("big.log");
    let line = |seq: u64| {
        let m = format!(
            "big seq={seq:010} INFO c.e.OrderService - order {} processed in {} ms for customer {}",
            seq * 7919 % 1_000_000,
            seq % 997,
            seq * 31 % 100_000
        );
        cri_line(&timestamp(seq), "stdout", "F", m.as_bytes())
    };
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&path).expect("create big.log"),
    );
    let (mut seq, mut written) = (0u64, 0u64);
    while written < 8 << 20 {
        let l = line(seq);
        out.write_all(&l).expect("write");
        written += l.len() as u64;
        seq += 1;
    }
    out.flush().expect("flush");
    let shipped = seq;
    let mut agent = setup.start();
    let count = crate::expect::wait_for_delivery(es, &setup.index_pattern, shipped, &mut agent);
    assert_eq!(count, shipped, "{}", agent.stderr_tail(30));
    std::thread::sleep(Duration::from_millis(1500));
    agent.sigterm(Duration::from_secs(30));
    while written < mib << 20 {
        let l = line(seq);
        out.write_all(&l).expect("write");
        written += l.len() as u64;
        seq += 1;
    }
    out.flush().expect("flush");
    drop(out);

    let cpu = || {
        // SAFETY: getrusage only writes into the zeroed struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        (secs(usage.ru_utime), secs(usage.ru_stime))
    };
    // Only the audit process ends (and is waited for) in between.
    let (user0, sys0) = cpu();
    let started = Instant::now();
    let (code, report) = audit_json(&setup.config_path(), &[]);
    let wall = started.elapsed().as_secs_f64();
    let (user1, sys1) = cpu();
    assert_eq!(code, 0, "{report:#}");
    let f = file_report(&report, "big.log");
    assert_counts(f, [seq, shipped, 0, 0, seq - shipped, 0, 0]);
    assert_eq!(f["bytes"], written);
    let requests = report["requests"].as_u64().expect("requests");
    eprintln!(
        "audit of {:.0} MiB, {seq} lines ({shipped} in the index): {wall:.1} s wall, \
         CPU {:.1} s user + {:.1} s system, {requests} requests, {:.0} ids/s, {:.0} MiB/s",
        written as f64 / 1048576.0,
        user1 - user0,
        sys1 - sys0,
        seq as f64 / wall,
        written as f64 / 1048576.0 / wall,
    );
}
