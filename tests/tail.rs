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
                give_up_after: Duration::from_secs(3600),
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
