//! Processors and the ack watermark: a real `FileServer` with a processor
//! chain on a temp directory, and a collector standing in for the sink that
//! acknowledges spans to the checkpointer (at once, or when told).
//!
//! What must hold: lines dropped by a processor are settled (the checkpoint
//! moves past them) without any document being sent, even when every line
//! of a span is dropped; but never before the kept lines ahead of them are
//! acknowledged; and a restart does not read settled lines again.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logship::buffer::Acknowledger;
use logship::event::{EncodedSpan, SpanOrigin};
use logship::processors::Chains;
use logship::tail::{Checkpointer, FileServer};
use logship::telemetry::Metrics;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const HEALTH: &str = "GET /healthz 200";

struct Pipeline {
    checkpointer: Arc<Checkpointer>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    server: JoinHandle<()>,
    /// Messages of every document received.
    received: Arc<Mutex<Vec<String>>>,
    /// Origins of spans received and not acknowledged yet.
    held: Arc<Mutex<Vec<SpanOrigin>>>,
}

impl Pipeline {
    /// Follows `logs/*.log` with a chain that drops health checks; the
    /// collector acknowledges each span at once if `ack`, else holds it.
    fn start(logs: &Path, data: &Path, ack: bool) -> Pipeline {
        let yaml = format!(
            r#"node_name: n1
data_dir: {data}
sources:
  - name: app
    include: ["{logs}/*.log"]
    format: plain
    processors:
      - drop: {{name: health, when: {{regex: {{message: '^GET /healthz'}}}}}}
sink:
  elasticsearch:
    hosts: ["http://127.0.0.1:9"]
"#,
            data = data.display(),
            logs = logs.display(),
        );
        let config =
            logship::config::load_str(Path::new("test.yaml"), &yaml, |_| None).expect("config");
        let checkpointer = Arc::new(Checkpointer::open(data).expect("checkpoints"));
        let metrics = Arc::new(Metrics::default());
        let chains = Chains::build(&config, &metrics.processors).expect("chains");
        let server = FileServer::new(&config, checkpointer.clone(), metrics.clone())
            .expect("server")
            .with_processors(chains);
        let (tx, mut rx) = mpsc::channel::<EncodedSpan>(1);
        let stop = CancellationToken::new();
        let server = tokio::spawn(server.run(tx, stop.clone()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(Mutex::new(Vec::new()));
        {
            let (received, held, checkpointer) =
                (received.clone(), held.clone(), checkpointer.clone());
            tokio::spawn(async move {
                while let Some(span) = rx.recv().await {
                    assert!(!span.is_empty(), "an empty span was sent downstream");
                    let origin = span.origin.expect("every span has an origin");
                    for i in 0..span.len() {
                        let item = std::str::from_utf8(span.item(i)).expect("utf-8");
                        let doc: serde_json::Value =
                            serde_json::from_str(item.lines().nth(1).expect("document"))
                                .expect("JSON");
                        let message = doc["message"].as_str().expect("message").to_owned();
                        received.lock().unwrap().push(message);
                    }
                    if ack {
                        checkpointer.delivered(&[origin]);
                    } else {
                        held.lock().unwrap().push(origin);
                    }
                }
            });
        }
        Pipeline {
            checkpointer,
            metrics,
            stop,
            server,
            received,
            held,
        }
    }

    /// The committed offset of `path` (as written to `checkpoints.json`).
    fn committed(&self, data: &Path, path: &Path) -> u64 {
        self.checkpointer.persist().expect("persist");
        let text = std::fs::read_to_string(data.join("checkpoints.json")).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        json["checkpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["path"].as_str() == path.to_str())
            .filter_map(|c| c["offset"].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// Waits (at most 5 s) until the committed offset of `path` is `offset`.
    async fn wait_committed(&self, data: &Path, path: &Path, offset: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let committed = self.committed(data, path);
            if committed == offset || Instant::now() > deadline {
                return committed;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn dropped(&self) -> u64 {
        self.metrics
            .processors
            .snapshot()
            .iter()
            .find(|(name, ..)| name == "health")
            .map_or(0, |(_, dropped, _)| *dropped)
    }

    async fn stop(self) -> Vec<String> {
        self.stop.cancel();
        let _ = self.server.await;
        self.received.lock().unwrap().clone()
    }
}

fn write(path: &Path, lines: &[String]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    for l in lines {
        writeln!(f, "{l}").expect("write");
    }
}

fn health(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{HEALTH} {i}")).collect()
}

#[tokio::test]
async fn a_file_of_dropped_lines_only_is_settled_to_its_end_and_not_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, data) = (dir.path().join("logs"), dir.path().join("data"));
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let file = logs.join("a.log");
    // More than a follower settles at once: several empty spans.
    let n = 3 * logship::processors::SETTLE_EVERY_DROPPED as usize + 17;
    write(&file, &health(n));
    let size = std::fs::metadata(&file).unwrap().len();

    let p = Pipeline::start(&logs, &data, true);
    assert_eq!(p.wait_committed(&data, &file, size).await, size);
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.dropped() < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(p.dropped(), n as u64, "each dropped line counted once");
    assert!(p.stop().await.is_empty(), "no document for dropped lines");

    // A restart reads from the settled end: only the new line arrives.
    write(&file, &["kept after the restart".to_owned()]);
    let p = Pipeline::start(&logs, &data, true);
    let size = std::fs::metadata(&file).unwrap().len();
    assert_eq!(p.wait_committed(&data, &file, size).await, size);
    assert_eq!(p.dropped(), 0, "nothing dropped again");
    assert_eq!(p.stop().await, ["kept after the restart"]);
}

#[tokio::test]
async fn dropped_lines_wait_for_the_kept_lines_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, data) = (dir.path().join("logs"), dir.path().join("data"));
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let file = logs.join("a.log");
    let kept: Vec<String> = (0..5).map(|i| format!("kept {i}")).collect();
    write(&file, &kept);
    let p = Pipeline::start(&logs, &data, false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.held.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The kept lines' span is out (not acknowledged); the dropped lines
    // come in a read of their own: an empty span, settled at once.
    write(&file, &health(100));
    let size = std::fs::metadata(&file).unwrap().len();
    while p.dropped() < 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(p.dropped(), 100);
    assert_eq!(p.held.lock().unwrap().len(), 1, "no span for dropped lines");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        p.committed(&data, &file),
        0,
        "the settled drops must not move the checkpoint past unacknowledged lines"
    );
    let held: Vec<SpanOrigin> = std::mem::take(&mut *p.held.lock().unwrap());
    p.checkpointer.delivered(&held);
    assert_eq!(p.wait_committed(&data, &file, size).await, size);
    assert_eq!(p.stop().await, kept);
}
