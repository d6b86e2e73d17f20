//! File-level tests of the tailer: a real `FileServer` on a temp directory,
//! a real span channel, and a collector that plays the downstream part
//! (parses every document's `message` and acknowledges each span to the
//! checkpointer, as the sink does).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logship::buffer::Acknowledger;
use logship::config::{
    BatchConfig, Config, ElasticsearchConfig, LogConfig, LogFormat, ReadFrom, RetryConfig,
    SourceConfig, SourceFormat,
};
use logship::event::EncodedSpan;
use logship::tail::{Checkpointer, FileServer};
use logship::telemetry::Metrics;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
struct Received {
    message: String,
    generation: u32,
    offset: u64,
}

fn config(logs: &Path, data: &Path, read_from: ReadFrom, batch_max_bytes: usize) -> Config {
    Config {
        node_name: "node-1".into(),
        data_dir: data.to_path_buf(),
        log: LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        },
        sources: vec![SourceConfig {
            name: "test".into(),
            include: vec![format!("{}/*.log", logs.display())],
            exclude: vec![],
            format: SourceFormat::Plain,
            read_from,
            max_line_bytes: 64 * 1024,
            include_compressed: false,
            rescan_interval: Duration::from_secs(10),
        }],
        sink: ElasticsearchConfig {
            hosts: vec!["http://127.0.0.1:9".into()],
            index: "logs-test".into(),
            batch: BatchConfig {
                max_bytes: batch_max_bytes,
                max_events: 5000,
                timeout: Duration::from_secs(1),
            },
            gzip_level: 1,
            concurrency: 2,
            request_timeout: Duration::from_secs(10),
            retry: RetryConfig {
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
            },
            tls: None,
            auth: None,
            headers: Default::default(),
            data_stream: None,
            template: logship::config::TemplateMode::None,
            dedot: true,
            dead_letter: logship::config::DeadLetterConfig {
                max_bytes: 64 << 20,
                max_files: 4,
            },
        },
        shutdown_timeout: Duration::from_secs(5),
        buffer: Default::default(),
        kubernetes: logship::config::kubernetes::KubernetesConfig::off("node-1"),
        http: None,
    }
}

/// A running file server with its downstream stand-in.
struct Pipeline {
    checkpointer: Arc<Checkpointer>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    server: JoinHandle<()>,
    collector: JoinHandle<()>,
    received: Arc<Mutex<Vec<Received>>>,
    /// Release a paused collector.
    release: Option<oneshot::Sender<()>>,
}

struct Options {
    read_from: ReadFrom,
    ack: bool,
    paused: bool,
    batch_max_bytes: usize,
    /// `buffer.max_open_files` (default: the config default).
    max_open_files: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            read_from: ReadFrom::Beginning,
            ack: true,
            paused: false,
            batch_max_bytes: 5 * 1024 * 1024,
            max_open_files: None,
        }
    }
}

fn messages_of(span: &EncodedSpan) -> Vec<(String, u64)> {
    (0..span.len())
        .map(|i| {
            let item = std::str::from_utf8(span.item(i)).expect("utf-8 item");
            let doc = item.lines().nth(1).expect("document line");
            let doc: serde_json::Value = serde_json::from_str(doc).expect("document is JSON");
            (
                doc["message"].as_str().expect("message").to_string(),
                doc["log"]["offset"].as_u64().expect("log.offset"),
            )
        })
        .collect()
}

impl Pipeline {
    fn start(logs: &Path, data: &Path, opts: Options) -> Pipeline {
        let mut config = config(logs, data, opts.read_from, opts.batch_max_bytes);
        if let Some(max_open_files) = opts.max_open_files {
            config.buffer = logship::config::BufferConfig::Memory { max_open_files };
        }
        let checkpointer = Arc::new(Checkpointer::open(data).unwrap());
        let metrics = Arc::new(Metrics::default());
        let server = FileServer::new(&config, checkpointer.clone(), metrics.clone()).unwrap();
        let (tx, mut rx) = mpsc::channel::<EncodedSpan>(1);
        let stop = CancellationToken::new();
        let server = tokio::spawn(server.run(tx, stop.clone()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (release, released) = oneshot::channel::<()>();
        let collector = {
            let received = received.clone();
            let checkpointer = checkpointer.clone();
            let paused = opts.paused;
            let ack = opts.ack;
            tokio::spawn(async move {
                if paused {
                    let _ = released.await;
                }
                while let Some(span) = rx.recv().await {
                    let origin = span.origin.expect("every span has an origin");
                    assert!(!span.is_empty(), "empty span sent");
                    let mut r = received.lock().unwrap();
                    for (message, offset) in messages_of(&span) {
                        r.push(Received {
                            message,
                            generation: origin.generation,
                            offset,
                        });
                    }
                    drop(r);
                    if ack {
                        checkpointer.delivered(&[origin]);
                    }
                }
            })
        };
        Pipeline {
            checkpointer,
            metrics,
            stop,
            server,
            collector,
            received,
            release: Some(release),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn messages(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.message).collect()
    }

    /// Waits until `n` lines arrived (or the deadline passes), returns the messages.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.messages();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(self) -> (Vec<Received>, Arc<Metrics>) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("file server stops promptly")
            .unwrap();
        drop(self.release);
        self.collector.await.unwrap();
        self.checkpointer.persist().unwrap();
        let r = self.received.lock().unwrap().clone();
        (r, self.metrics)
    }
}

fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix} line {i:06}")).collect()
}

/// Asserts that `got` holds every expected line exactly once (in any order).
fn assert_exactly_once(got: &[String], expected: &[String]) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for m in got {
        *counts.entry(m.as_str()).or_default() += 1;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|e| !counts.contains_key(e.as_str()))
        .collect();
    let dup: Vec<(&&str, &usize)> = counts.iter().filter(|(_, c)| **c > 1).collect();
    let unexpected = got.len() - expected.len().min(got.len());
    assert!(
        missing.is_empty() && dup.is_empty() && got.len() == expected.len(),
        "{} missing (first: {:?}), {} duplicated (first: {:?}), {} received for {} expected ({unexpected} extra)",
        missing.len(),
        missing.first(),
        dup.len(),
        dup.first(),
        got.len(),
        expected.len()
    );
}

fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let logs = root.join("logs");
    let data = root.join("data");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    (dir, logs, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_lines_arrive_within_250ms() {
    let (_d, logs, data) = dirs();
    let path = logs.join("app.log");
    append(&path, lines("initial", 0..3));
    let p = Pipeline::start(&logs, &data, Options::default());
    assert_eq!(p.wait_for(3, Duration::from_secs(5)).await.len(), 3);
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        // Let the follower go idle first, so the wake-up must come from inotify
        // (its fallback re-check is a second).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = p.messages().len();
        let written = Instant::now();
        append(&path, [format!("late line {i}")]);
        let got = p.wait_for(before + 1, Duration::from_secs(3)).await;
        let latency = written.elapsed();
        assert_eq!(
            got.last().map(String::as_str),
            Some(format!("late line {i}").as_str())
        );
        worst = worst.max(latency);
    }
    assert!(
        worst < Duration::from_millis(250),
        "worst latency {worst:?}"
    );
    let (_, metrics) = p.stop().await;
    assert_eq!(Metrics::get(&metrics.lines_read), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_rename_while_writing_loses_and_duplicates_nothing() {
    let (_d, logs, data) = dirs();
    let path = logs.join("0.log");
    let p = Pipeline::start(&logs, &data, Options::default());
    let rotations = 5;
    let per_file = 2000;
    let writer = {
        let path = path.clone();
        let logs = logs.clone();
        let received = p.received.clone();
        // Real files live far longer than discovery takes; a file renamed out
        // of the glob before it was ever seen cannot be followed. So rotate
        // only once the tailer has seen the current file's first line.
        let seen = move |first: &str| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if received.lock().unwrap().iter().any(|r| r.message == first) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        tokio::task::spawn_blocking(move || {
            let mut expected = Vec::new();
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            for r in 0..rotations {
                for (i, l) in lines(&format!("r{r}"), 0..per_file).into_iter().enumerate() {
                    writeln!(f, "{l}").unwrap();
                    expected.push(l);
                    if i % 200 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                seen(&format!("r{r} line 000000"));
                // kubelet: rename, and the runtime writes a little more to
                // the old file before it reopens the path.
                std::fs::rename(&path, logs.join(format!("0.log.{r}"))).unwrap();
                for l in lines(&format!("r{r} late"), 0..3) {
                    writeln!(f, "{l}").unwrap();
                    expected.push(l);
                }
                f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .unwrap();
            }
            for l in lines("final", 0..10) {
                writeln!(f, "{l}").unwrap();
                expected.push(l);
            }
            expected
        })
    };
    let expected = writer.await.unwrap();
    let got = p.wait_for(expected.len(), Duration::from_secs(15)).await;
    // Give a duplicate the chance to show up.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (received, metrics) = p.stop().await;
    let got_all: Vec<String> = received.into_iter().map(|r| r.message).collect();
    assert!(got.len() <= got_all.len());
    assert_exactly_once(&got_all, &expected);
    // Every rotated-away file was read to its end and released. The
    // `rotations` counter only counts the renames noticed after the new file
    // existed; one noticed in the gap between rename and create looks like a
    // deletion (the kubelet has the same gap), so it may be lower.
    assert_eq!(Metrics::get(&metrics.files_closed), rotations as u64);
    assert!(Metrics::get(&metrics.rotations) <= rotations as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_starts_a_new_generation() {
    let (_d, logs, data) = dirs();
    let path = logs.join("app.log");
    let before = lines("before", 0..50);
    append(&path, before.clone());
    let p = Pipeline::start(&logs, &data, Options::default());
    assert_eq!(p.wait_for(50, Duration::from_secs(5)).await.len(), 50);
    // copytruncate: copy the file away, truncate it in place, keep writing.
    std::fs::copy(&path, logs.join("app.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let after = lines("after", 0..10);
    append(&path, after.clone());
    let got = p.wait_for(60, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (received, metrics) = p.stop().await;
    let _ = got;
    let all: Vec<String> = received.iter().map(|r| r.message.clone()).collect();
    let mut expected = before;
    expected.extend(after.iter().cloned());
    // app.log.1 does not match *.log: only the live file is followed.
    assert_exactly_once(&all, &expected);
    let new: Vec<&Received> = received
        .iter()
        .filter(|r| r.message.starts_with("after"))
        .collect();
    assert!(
        new.iter().all(|r| r.generation == 1),
        "new content is generation 1"
    );
    assert_eq!(new[0].offset, 0, "new content is read from offset 0");
    assert!(
        received
            .iter()
            .filter(|r| r.message.starts_with("before"))
            .all(|r| r.generation == 0)
    );
    assert_eq!(Metrics::get(&metrics.truncations), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_refilled_past_the_old_offset_is_noticed() {
    let (_d, logs, data) = dirs();
    let path = logs.join("app.log");
    append(&path, lines("short", 0..5));
    let p = Pipeline::start(&logs, &data, Options::default());
    assert_eq!(p.wait_for(5, Duration::from_secs(5)).await.len(), 5);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Truncate and, before the follower looks, write more than there was.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let refill = lines("refill", 0..100);
    for l in &refill {
        writeln!(f, "{l}").unwrap();
    }
    drop(f);
    let got = p.wait_for(105, Duration::from_secs(5)).await;
    let (_, metrics) = p.stop().await;
    let mut expected = lines("short", 0..5);
    expected.extend(refill);
    assert_exactly_once(&got, &expected);
    assert_eq!(Metrics::get(&metrics.truncations), 1);
}

fn fd_links_to_deleted(name: &str) -> bool {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .any(|e| {
            std::fs::read_link(e.path())
                .map(|t| {
                    let t = t.to_string_lossy();
                    t.contains(name) && t.ends_with("(deleted)")
                })
                .unwrap_or(false)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_unread_file_is_read_to_its_end_then_closed() {
    let (_d, logs, data) = dirs();
    let name = "doomed-unread.log";
    let path = logs.join(name);
    let expected = lines("doomed", 0..20_000);
    append(&path, expected.clone());
    // The collector does not take spans yet: the follower blocks on its send
    // with most of the file unread.
    let mut p = Pipeline::start(
        &logs,
        &data,
        Options {
            paused: true,
            batch_max_bytes: 64 * 1024,
            ..Options::default()
        },
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_file(&path).unwrap();
    assert!(
        fd_links_to_deleted(name),
        "the follower holds the deleted file open"
    );
    let _ = p.release.take().unwrap().send(());
    let got = p.wait_for(expected.len(), Duration::from_secs(10)).await;
    assert_exactly_once(&got, &expected);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fd_links_to_deleted(name) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!fd_links_to_deleted(name), "deleted file's fd was closed");
    let (_, metrics) = p.stop().await;
    assert_eq!(Metrics::get(&metrics.files_closed), 1);
}

/// Deleted files this process holds open whose name starts with `prefix`.
fn deleted_fds(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .filter(|t| {
            t.ends_with(" (deleted)")
                && Path::new(t)
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_open_files_the_oldest_deleted_files_are_given_up_and_counted() {
    let (_d, logs, data) = dirs();
    let limit = 2;
    // Five files, oldest first by modification time; the first four are
    // deleted while downstream takes nothing, the fifth stays.
    let names: Vec<String> = (0..5).map(|i| format!("held-{i}.log")).collect();
    let mut written: Vec<Vec<String>> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let path = logs.join(name);
        let file_lines = lines(&format!("held-{i}"), 0..20_000);
        append(&path, file_lines.clone());
        let age = Duration::from_secs(600 - 100 * i as u64);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - age)
            .unwrap();
        written.push(file_lines);
    }
    let sizes: Vec<u64> = names
        .iter()
        .map(|n| std::fs::metadata(logs.join(n)).unwrap().len())
        .collect();
    let mut p = Pipeline::start(
        &logs,
        &data,
        Options {
            paused: true,
            batch_max_bytes: 64 * 1024,
            max_open_files: Some(limit),
            ..Options::default()
        },
    );
    // Every follower reads until its send blocks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for name in &names[..4] {
        std::fs::remove_file(logs.join(name)).unwrap();
    }
    // The server notices within a scan (inotify) and gives up the two oldest.
    let deadline = Instant::now() + Duration::from_secs(5);
    while deleted_fds("held-").len() > limit as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // From then on, never more than the limit.
    let watch_until = Instant::now() + Duration::from_millis(1500);
    let mut most = 0;
    while Instant::now() < watch_until {
        most = most.max(deleted_fds("held-").len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        most <= limit as usize,
        "{most} deleted files held open, limit {limit}"
    );
    let mut still_held = deleted_fds("held-");
    still_held.sort();
    assert_eq!(
        still_held,
        vec![
            format!("{} (deleted)", logs.join(&names[2]).display()),
            format!("{} (deleted)", logs.join(&names[3]).display()),
        ],
        "the two oldest deleted files are given up, the newer ones are held"
    );

    let _ = p.release.take().unwrap().send(());
    let all: usize = written[2..].iter().map(Vec::len).sum();
    p.wait_for(all, Duration::from_secs(20)).await;
    // Lines of given-up files already handed downstream still arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = p.messages();
    let of = |i: usize| -> Vec<String> {
        let prefix = format!("held-{i} ");
        got.iter()
            .filter(|m| m.starts_with(&prefix))
            .cloned()
            .collect()
    };
    let kept: Vec<String> = written[2..].concat();
    let kept_got: Vec<String> = (2..5).flat_map(of).collect();
    assert_exactly_once(&kept_got, &kept);
    // A given-up file's shipped lines are a prefix of it; the rest is counted.
    let mut lost = 0;
    for i in 0..2 {
        let shipped = of(i);
        assert_eq!(
            shipped[..],
            written[i][..shipped.len()],
            "held-{i}: shipped lines are the file's first ones, once each"
        );
        let shipped_bytes: u64 = shipped.iter().map(|l| l.len() as u64 + 1).sum();
        assert!(shipped_bytes < sizes[i], "held-{i} had unshipped data");
        lost += sizes[i] - shipped_bytes;
    }
    let (_, metrics) = p.stop().await;
    assert_eq!(Metrics::get(&metrics.max_open_files_lost_bytes), lost);
    assert!(deleted_fds("held-").is_empty(), "every deleted file closed");
    // Their checkpoints moved to their ends: nothing waits for them.
    let store: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("checkpoints.json")).unwrap()).unwrap();
    for i in 0..2 {
        let path = logs.join(&names[i]);
        let entry = store["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == path.to_str().unwrap())
            .unwrap_or_else(|| panic!("no checkpoint for {}: {store}", path.display()));
        assert_eq!(entry["offset"], sizes[i], "{}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_persisted_checkpoint() {
    let (_d, logs, data) = dirs();
    let path = logs.join("app.log");
    let first = lines("first", 0..100);
    append(&path, first.clone());
    let p = Pipeline::start(&logs, &data, Options::default());
    let got = p.wait_for(100, Duration::from_secs(5)).await;
    assert_exactly_once(&got, &first);
    p.stop().await;

    // Written while the agent is down.
    let second = lines("second", 0..50);
    append(&path, second.clone());
    let p = Pipeline::start(&logs, &data, Options::default());
    let got = p.wait_for(50, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (received, _) = p.stop().await;
    assert_eq!(got.len(), 50);
    let all: Vec<String> = received.into_iter().map(|r| r.message).collect();
    assert_exactly_once(&all, &second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_lines_are_read_again_after_restart() {
    let (_d, logs, data) = dirs();
    let path = logs.join("app.log");
    let all = lines("line", 0..100);
    append(&path, all.clone());
    let p = Pipeline::start(
        &logs,
        &data,
        Options {
            ack: false,
            ..Options::default()
        },
    );
    assert_eq!(p.wait_for(100, Duration::from_secs(5)).await.len(), 100);
    p.stop().await;

    let p = Pipeline::start(&logs, &data, Options::default());
    let got = p.wait_for(100, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (received, _) = p.stop().await;
    assert_eq!(got.len(), 100);
    let again: Vec<String> = received.into_iter().map(|r| r.message).collect();
    assert_exactly_once(&again, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_from_end_skips_old_content_of_files_present_at_start() {
    let (_d, logs, data) = dirs();
    let old = logs.join("old.log");
    append(&old, lines("old", 0..20));
    // An unterminated last line: read_from end starts after the last `\n`,
    // so this line is shipped once it completes.
    OpenOptions::new()
        .append(true)
        .open(&old)
        .unwrap()
        .write_all(b"half")
        .unwrap();
    let p = Pipeline::start(
        &logs,
        &data,
        Options {
            read_from: ReadFrom::End,
            ..Options::default()
        },
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    OpenOptions::new()
        .append(true)
        .open(&old)
        .unwrap()
        .write_all(b" done\n")
        .unwrap();
    append(&old, lines("new", 0..5));
    // A file created after start is read from its beginning.
    let fresh = logs.join("fresh.log");
    let mut f = File::create(&fresh).unwrap();
    for l in lines("fresh", 0..7) {
        writeln!(f, "{l}").unwrap();
    }
    drop(f);
    let got = p.wait_for(13, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (received, _) = p.stop().await;
    let all: Vec<String> = received.into_iter().map(|r| r.message).collect();
    let mut expected = vec!["half done".to_string()];
    expected.extend(lines("new", 0..5));
    expected.extend(lines("fresh", 0..7));
    assert!(got.len() >= 13);
    assert_exactly_once(&all, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stops_when_downstream_is_gone() {
    let (_d, logs, data) = dirs();
    append(&logs.join("app.log"), lines("x", 0..10));
    let config = config(&logs, &data, ReadFrom::Beginning, 1 << 20);
    let checkpointer = Arc::new(Checkpointer::open(&data).unwrap());
    let server = FileServer::new(&config, checkpointer, Arc::new(Metrics::default())).unwrap();
    let (tx, rx) = mpsc::channel::<EncodedSpan>(1);
    let run = tokio::spawn(server.run(tx, CancellationToken::new()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("run returns once the span receiver is dropped")
        .unwrap();
}

// ---------------------------------------------------------------------------
// Issue 9: the promise across restarts, renames and rewrites.

/// Rotates `path` the way the kubelet does: rename to `<name>.<stamp>`.
fn kubelet_rotate(path: &Path, stamp: &str) -> PathBuf {
    let rotated = PathBuf::from(format!("{}.{stamp}", path.display()));
    std::fs::rename(path, &rotated).unwrap();
    rotated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_while_stopped_the_rest_of_the_old_file_is_read_after_restart() {
    let (_d, logs, data) = dirs();
    let path = logs.join("0.log");
    append(&path, lines("before", 0..100));
    let p = Pipeline::start(&logs, &data, Options::default());
    assert_eq!(p.wait_for(100, Duration::from_secs(5)).await.len(), 100);
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.stop().await;

    // The agent is down: the runtime writes more, the kubelet rotates
    // (`*.log` no longer matches the old file) and a new file begins.
    let unread = lines("unread", 0..50);
    append(&path, unread.clone());
    kubelet_rotate(&path, "20261128-093000");
    let fresh = lines("fresh", 0..20);
    append(&path, fresh.clone());

    let p = Pipeline::start(&logs, &data, Options::default());
    p.wait_for(70, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (received, metrics) = p.stop().await;
    let got: Vec<String> = received.into_iter().map(|r| r.message).collect();
    let mut expected = unread;
    expected.extend(fresh);
    assert_exactly_once(&got, &expected);
    assert_eq!(
        Metrics::get(&metrics.files_closed),
        1,
        "the rotated file was read to its end and released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_and_compressed_while_stopped_is_read_from_the_gzip() {
    let (_d, logs, data) = dirs();
    let path = logs.join("0.log");
    append(&path, lines("before", 0..100));
    let p = Pipeline::start(&logs, &data, Options::default());
    assert_eq!(p.wait_for(100, Duration::from_secs(5)).await.len(), 100);
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.stop().await;

    let unread = lines("unread", 0..50);
    append(&path, unread.clone());
    let rotated = kubelet_rotate(&path, "20261128-093000");
    // The kubelet compresses older rotations: a new inode, `.gz`.
    let gz = PathBuf::from(format!("{}.gz", rotated.display()));
    let mut enc =
        flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(&rotated).unwrap()).unwrap();
    enc.finish().unwrap();
    std::fs::remove_file(&rotated).unwrap();
    let fresh = lines("fresh", 0..20);
    append(&path, fresh.clone());

    let p = Pipeline::start(&logs, &data, Options::default());
    p.wait_for(70, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (received, _) = p.stop().await;
    let got: Vec<String> = received.into_iter().map(|r| r.message).collect();
    let mut expected = unread;
    expected.extend(fresh);
    assert_exactly_once(&got, &expected);
    assert!(gz.exists(), "the compressed rotation is left alone");
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|e| e.path())
        .collect();
    assert!(
        leftovers.is_empty(),
        "decompressed copies are removed: {leftovers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_within_the_glob_keeps_its_acknowledged_position() {
    let (_d, logs, data) = dirs();
    let path = logs.join("app.log");
    let all = lines("unacked", 0..100);
    append(&path, all.clone());
    // Elasticsearch is down: nothing is acknowledged.
    let p = Pipeline::start(
        &logs,
        &data,
        Options {
            ack: false,
            ..Options::default()
        },
    );
    assert_eq!(p.wait_for(100, Duration::from_secs(5)).await.len(), 100);
    std::fs::rename(&path, logs.join("app-1.log")).unwrap();
    // The old follower drains and closes; the next scan (a new app.log
    // asks for one) finds the renamed file again under its new name.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    append(&path, lines("new", 0..10));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    p.stop().await;

    let p = Pipeline::start(&logs, &data, Options::default());
    p.wait_for(110, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (received, _) = p.stop().await;
    let got: Vec<String> = received.into_iter().map(|r| r.message).collect();
    let mut expected = all;
    expected.extend(lines("new", 0..10));
    assert_exactly_once(&got, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_while_the_follower_is_behind_reads_no_new_line_twice() {
    let (_d, logs, data) = dirs();
    let path = logs.join("app.log");
    let old: Vec<String> = (0..20_000)
        .map(|i| format!("old line {i:06} {}", "o".repeat(40)))
        .collect();
    append(&path, old.clone());
    // Downstream holds the follower back after its first read.
    let mut p = Pipeline::start(
        &logs,
        &data,
        Options {
            paused: true,
            batch_max_bytes: 64 * 1024,
            ..Options::default()
        },
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // copytruncate, and the new content outgrows the old read offset.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let new: Vec<String> = (0..20_000)
        .map(|i| format!("new line {i:06} {}", "n".repeat(44)))
        .collect();
    append(&path, new.clone());
    drop(p.release.take());
    p.wait_for(20_000, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (received, _) = p.stop().await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in &received {
        *counts.entry(r.message.as_str()).or_default() += 1;
    }
    let old_set: std::collections::HashSet<&str> = old.iter().map(String::as_str).collect();
    let spliced: Vec<&&str> = counts
        .keys()
        .filter(|m| !old_set.contains(**m) && !new.iter().any(|n| n == **m))
        .take(3)
        .collect();
    let twice = counts.values().filter(|c| **c > 1).count();
    let missing = new
        .iter()
        .filter(|n| !counts.contains_key(n.as_str()))
        .count();
    assert!(
        spliced.is_empty() && twice == 0 && missing == 0,
        "{} spliced lines (first {spliced:?}), {twice} lines twice, {missing} new lines missing",
        spliced.len()
    );
    assert!(
        received
            .iter()
            .filter(|r| r.message.starts_with("new"))
            .all(|r| r.generation == 1),
        "new content is generation 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_with_the_same_first_line_while_stopped_is_read_from_its_start() {
    let (_d, logs, data) = dirs();
    let path = logs.join("app.log");
    let header = "# log format 1.0 host=node-1".to_string();
    append(&path, [header.clone()]);
    append(&path, lines("first", 0..100));
    let p = Pipeline::start(&logs, &data, Options::default());
    assert_eq!(p.wait_for(101, Duration::from_secs(5)).await.len(), 101);
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.stop().await;

    // Rewritten in place (same inode) with the same header, and longer.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    writeln!(f, "{header}").unwrap();
    let second = lines("second", 0..300);
    for l in &second {
        writeln!(f, "{l}").unwrap();
    }
    drop(f);

    let p = Pipeline::start(&logs, &data, Options::default());
    p.wait_for(301, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (received, _) = p.stop().await;
    let got: Vec<String> = received.iter().map(|r| r.message.clone()).collect();
    let mut expected = vec![header];
    expected.extend(second);
    assert_exactly_once(&got, &expected);
    assert!(
        received.iter().all(|r| r.generation == 1),
        "a new generation: new _ids"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_while_stopped_is_a_counted_loss() {
    let (_d, logs, data) = dirs();
    let path = logs.join("0.log");
    append(&path, lines("acked", 0..10));
    let p = Pipeline::start(&logs, &data, Options::default());
    assert_eq!(p.wait_for(10, Duration::from_secs(5)).await.len(), 10);
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.stop().await;
    // Read but never acknowledged, then the agent stops.
    append(&path, lines("unacked", 0..40));
    let p = Pipeline::start(
        &logs,
        &data,
        Options {
            ack: false,
            ..Options::default()
        },
    );
    assert_eq!(p.wait_for(40, Duration::from_secs(5)).await.len(), 40);
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.stop().await;
    let unacked_bytes: u64 = lines("unacked", 0..40)
        .iter()
        .map(|l| l.len() as u64 + 1)
        .sum();
    // While stopped: rotated, and the rotation deleted.
    let rotated = kubelet_rotate(&path, "20261128-100000");
    std::fs::remove_file(rotated).unwrap();
    append(&path, lines("fresh", 0..5));

    let p = Pipeline::start(&logs, &data, Options::default());
    p.wait_for(5, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (received, metrics) = p.stop().await;
    let got: Vec<String> = received.into_iter().map(|r| r.message).collect();
    assert_exactly_once(&got, &lines("fresh", 0..5));
    assert_eq!(Metrics::get(&metrics.gone_while_stopped_files), 1);
    assert_eq!(
        Metrics::get(&metrics.gone_while_stopped_bytes),
        unacked_bytes
    );
    // Counted once: the next start does not count it again.
    let p = Pipeline::start(&logs, &data, Options::default());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, metrics) = p.stop().await;
    assert_eq!(Metrics::get(&metrics.gone_while_stopped_files), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reload_files_created_during_the_drain_are_new_despite_read_from_end() {
    let (_d, logs, data) = dirs();
    append(&logs.join("old.log"), lines("old", 0..20));
    let registry = Arc::new(logship::tail::FileRegistry::default());
    let run = |registry: Arc<logship::tail::FileRegistry>| {
        let config = config(&logs, &data, ReadFrom::End, 1 << 20);
        let checkpointer = Arc::new(Checkpointer::open(&data).unwrap());
        let server = FileServer::new(&config, checkpointer.clone(), Arc::new(Metrics::default()))
            .unwrap()
            .with_registry(registry);
        let (tx, mut rx) = mpsc::channel::<EncodedSpan>(4);
        let stop = CancellationToken::new();
        let server = tokio::spawn(server.run(tx, stop.clone()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let collector = {
            let received = received.clone();
            tokio::spawn(async move {
                while let Some(span) = rx.recv().await {
                    received
                        .lock()
                        .unwrap()
                        .extend(messages_of(&span).into_iter().map(|(m, _)| m));
                    checkpointer.delivered(&[span.origin.unwrap()]);
                }
                checkpointer.persist().unwrap();
            })
        };
        (stop, server, collector, received)
    };
    // The first pipeline of the process: old content is skipped.
    let (stop, server, collector, received) = run(registry.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    server.await.unwrap();
    collector.await.unwrap();
    assert!(received.lock().unwrap().is_empty());
    // Created while the first pipeline drains, before the second scans.
    append(&logs.join("new.log"), lines("new", 0..10));
    let (stop, server, collector, received) = run(registry);
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.cancel();
    server.await.unwrap();
    collector.await.unwrap();
    let got = received.lock().unwrap().clone();
    assert_exactly_once(&got, &lines("new", 0..10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_of_an_excluded_pod_leave_nothing_behind() {
    use k8s_openapi::api::core::v1::Pod;
    use logship::k8s::{Enricher, NamespaceCache, PodCache};
    let (_d, logs, data) = dirs();
    let dir = logs.join("team_api-7d4_uid-1").join("app");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("0.log");
    append(&path, lines("secret", 0..5));
    let pods = Arc::new(PodCache::new(Duration::from_secs(60)));
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "api-7d4", "namespace": "team", "uid": "uid-1",
                     "annotations": {"logship.io/exclude": "true"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "app:1"}]}
    }))
    .unwrap();
    pods.apply(kube::runtime::watcher::Event::Apply(pod));
    let mut config = config(&logs, &data, ReadFrom::Beginning, 1 << 20);
    config.sources[0].include = vec![format!("{}/*/*/*.log", logs.display())];
    let checkpointer = Arc::new(Checkpointer::open(&data).unwrap());
    let server = FileServer::new(&config, checkpointer.clone(), Arc::new(Metrics::default()))
        .unwrap()
        .with_enricher(Enricher::Cache {
            cache: pods,
            namespaces: Arc::new(NamespaceCache::new(Duration::from_secs(60))),
            wait: Duration::from_millis(10),
            dedot: true,
            namespace_labels: false,
        });
    let (tx, mut rx) = mpsc::channel::<EncodedSpan>(4);
    let stop = CancellationToken::new();
    let server = tokio::spawn(server.run(tx, stop.clone()));
    let shipped = tokio::spawn(async move {
        let mut n = 0;
        while let Some(span) = rx.recv().await {
            n += span.len();
        }
        n
    });
    for r in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        kubelet_rotate(&path, &format!("2026112{r}-000000"));
        append(&path, lines(&format!("secret{r}"), 0..5));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Far past the retention of entries no longer followed.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3 * 24 * 3600;
    checkpointer.persist_at(later).unwrap();
    let store: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("checkpoints.json")).unwrap()).unwrap();
    let paths: Vec<&str> = store["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    stop.cancel();
    server.await.unwrap();
    assert_eq!(
        shipped.await.unwrap(),
        0,
        "an excluded pod's lines are never shipped"
    );
    // An excluded file is not followed: its entry (and those of its
    // rotations) expire like any file no longer followed.
    assert!(paths.is_empty(), "entries kept past retention: {paths:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_file_keeps_the_format_its_first_line_gave() {
    let (_d, logs, data) = dirs();
    let path = logs.join("0.log");
    append(
        &path,
        ["2026-11-28T10:00:00.000000001Z stdout F first".to_string()],
    );
    let start = |logs: &Path, data: &Path| {
        let mut config = config(logs, data, ReadFrom::Beginning, 1 << 20);
        config.sources[0].format = SourceFormat::Auto;
        let checkpointer = Arc::new(Checkpointer::open(data).unwrap());
        let server =
            FileServer::new(&config, checkpointer.clone(), Arc::new(Metrics::default())).unwrap();
        let (tx, mut rx) = mpsc::channel::<EncodedSpan>(4);
        let stop = CancellationToken::new();
        let server = tokio::spawn(server.run(tx, stop.clone()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let collector = {
            let received = received.clone();
            tokio::spawn(async move {
                while let Some(span) = rx.recv().await {
                    received
                        .lock()
                        .unwrap()
                        .extend(messages_of(&span).into_iter().map(|(m, _)| m));
                    checkpointer.delivered(&[span.origin.unwrap()]);
                }
                checkpointer.persist().unwrap();
            })
        };
        (stop, server, collector, received)
    };
    let (stop, server, collector, received) = start(&logs, &data);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    server.await.unwrap();
    collector.await.unwrap();
    assert_eq!(*received.lock().unwrap(), vec!["first".to_string()]);
    // Past the checkpoint: a line that is not CRI, then a line in two parts.
    append(
        &path,
        [
            "garbage that is not CRI".to_string(),
            "2026-11-28T10:00:01.000000001Z stdout P joined ".to_string(),
            "2026-11-28T10:00:01.000000002Z stdout F line".to_string(),
        ],
    );
    let (stop, server, collector, received) = start(&logs, &data);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    server.await.unwrap();
    collector.await.unwrap();
    assert_eq!(
        *received.lock().unwrap(),
        vec![
            "garbage that is not CRI".to_string(),
            "joined line".to_string()
        ],
        "decoded as CRI, as when the file is read from its start"
    );
}

/// Runs a file server with `config` (and `enricher`) until `stop_after`,
/// acknowledging spans if `ack`; returns `(index, message)` of every
/// document.
async fn run_collecting(
    config: &Config,
    enricher: Option<logship::k8s::Enricher>,
    ack: bool,
    stop_after: Duration,
) -> Vec<(String, String)> {
    let checkpointer = Arc::new(Checkpointer::open(&config.data_dir).unwrap());
    let mut server =
        FileServer::new(config, checkpointer.clone(), Arc::new(Metrics::default())).unwrap();
    if let Some(e) = enricher {
        server = server.with_enricher(e);
    }
    let (tx, mut rx) = mpsc::channel::<EncodedSpan>(4);
    let stop = CancellationToken::new();
    let server = tokio::spawn(server.run(tx, stop.clone()));
    let collector = tokio::spawn(async move {
        let mut docs = Vec::new();
        while let Some(span) = rx.recv().await {
            for i in 0..span.len() {
                let item = std::str::from_utf8(span.item(i)).unwrap();
                let mut lines = item.lines();
                let action: serde_json::Value =
                    serde_json::from_str(lines.next().unwrap()).unwrap();
                let doc: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
                docs.push((
                    action["create"]["_index"].as_str().unwrap().to_string(),
                    doc["message"].as_str().unwrap().to_string(),
                ));
            }
            if ack {
                checkpointer.delivered(&[span.origin.unwrap()]);
            }
        }
        checkpointer.persist().unwrap();
        docs
    });
    tokio::time::sleep(stop_after).await;
    stop.cancel();
    server.await.unwrap();
    collector.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_line_read_again_lands_in_the_daily_index_of_its_first_reading() {
    let (_d, logs, data) = dirs();
    append(&logs.join("app.log"), lines("plain", 0..50));
    let mut config = config(&logs, &data, ReadFrom::Beginning, 1 << 20);
    config.sink.index = "logs-%Y.%m.%d".into();
    // Read, never acknowledged.
    let first = run_collecting(&config, None, false, Duration::from_millis(700)).await;
    assert_eq!(first.len(), 50);
    // As if that reading had happened two days ago (the agent stopped just
    // before a UTC midnight and starts again after it).
    let store_path = data.join("checkpoints.json");
    let mut store: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&store_path).unwrap()).unwrap();
    let runs = store["checkpoints"][0]["reread"]
        .as_array_mut()
        .expect("stamps of unacknowledged lines are stored");
    let two_days_ago = runs[0]["secs"].as_i64().unwrap() - 2 * 86_400;
    for run in runs.iter_mut() {
        run["secs"] = two_days_ago.into();
    }
    std::fs::write(&store_path, store.to_string()).unwrap();
    let then = chrono::DateTime::from_timestamp(two_days_ago, 0)
        .unwrap()
        .format("logs-%Y.%m.%d")
        .to_string();

    append(&logs.join("app.log"), lines("later", 0..5));
    let again = run_collecting(&config, None, true, Duration::from_millis(700)).await;
    let today = chrono::Utc::now().format("logs-%Y.%m.%d").to_string();
    for (index, message) in &again {
        let want = if message.starts_with("plain") {
            &then
        } else {
            &today
        };
        assert_eq!(index, want, "{message}");
    }
    assert_eq!(again.len(), 55);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_read_again_without_its_pod_keeps_the_index_its_pod_gave_it() {
    use k8s_openapi::api::core::v1::Pod;
    use logship::k8s::{Enricher, NamespaceCache, PodCache};
    let (_d, logs, data) = dirs();
    let dir = logs.join("team_api-7d4_uid-9").join("app");
    std::fs::create_dir_all(&dir).unwrap();
    append(&dir.join("0.log"), lines("podline", 0..30));
    let mut config = config(&logs, &data, ReadFrom::Beginning, 1 << 20);
    config.sources[0].include = vec![format!("{}/*/*/*.log", logs.display())];
    config.sink.index = "logs-{kubernetes.namespace:-none}".into();
    let enricher = |known: bool| {
        let pods = Arc::new(PodCache::new(Duration::from_secs(60)));
        if known {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "api-7d4", "namespace": "team", "uid": "uid-9"},
                "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "app:1"}]}
            }))
            .unwrap();
            pods.apply(kube::runtime::watcher::Event::Apply(pod));
        }
        Enricher::Cache {
            cache: pods,
            namespaces: Arc::new(NamespaceCache::new(Duration::from_secs(60))),
            wait: Duration::from_millis(10),
            dedot: true,
            namespace_labels: false,
        }
    };
    let first = run_collecting(
        &config,
        Some(enricher(true)),
        false,
        Duration::from_millis(700),
    )
    .await;
    assert!(first.iter().all(|(i, _)| i == "logs-team"), "{first:?}");
    // Restarted after the pod was deleted: its metadata is gone.
    let again = run_collecting(
        &config,
        Some(enricher(false)),
        true,
        Duration::from_millis(700),
    )
    .await;
    assert_eq!(again.len(), 30);
    assert!(
        again.iter().all(|(i, _)| i == "logs-team"),
        "a line read again must land in the index of its first copy: {:?}",
        again.first()
    );
}
