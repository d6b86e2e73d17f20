//! The disk buffer end to end: Elasticsearch unreachable for longer than the
//! log files survive (rotated and deleted the kubelet way during the outage,
//! and the agent killed meanwhile), and a `kill -9` loop while shipping with
//! rotation going on. Afterwards the index must hold every line exactly once.
//!
//! The outage is a TCP proxy between the agent and the shared node that the
//! test switches off (connections refused and open ones cut), so the shared
//! node keeps serving the other tests.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::expect::{DELIVERY_TIMEOUT, Line, assert_exactly_once, cri_stdout, wait_for_delivery};
use crate::support::elasticsearch::{self, Elasticsearch};
use crate::support::logship::{LogWriter, Options, Setup, rotate_kubelet};

/// A switchable TCP proxy to Elasticsearch.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let target = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                {
                    let mut c = conns2.lock().unwrap();
                    c.push(client.try_clone().unwrap());
                    c.push(server.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy { port, up, conns }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for c in self.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// A setup shipping through `url` with `buffer:` appended to its config.
fn disk_setup(name: &str, url: &str, options: Options, buffer: &str) -> Setup {
    let es = elasticsearch::shared();
    let setup = Setup::new(name, url, options);
    let _ = es.request(
        reqwest::Method::DELETE,
        &format!("{}?allow_no_indices=true", setup.index_pattern),
        "application/json",
        None,
    );
    let yaml = format!(
        "{}shutdown_timeout: 2s\nbuffer: {buffer}\n",
        setup.config_yaml()
    );
    std::fs::write(setup.config_path(), yaml).expect("write config");
    setup
}

fn write_lines(
    name: &str,
    w: &mut LogWriter,
    seqs: std::ops::Range<u64>,
    expected: &mut Vec<Line>,
) {
    let file = w
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut bytes = Vec::new();
    for seq in seqs {
        bytes.extend(cri_stdout(
            seq,
            format!("{name} {file} seq={seq:06} a line written while Elasticsearch may be away"),
            expected,
        ));
    }
    w.write(&bytes);
}

/// Waits until the agent holds no deleted file open (it read them to the end).
fn wait_deleted_files_released(agent: &crate::support::logship::Agent) {
    let started = Instant::now();
    while !agent.open_deleted_files().is_empty() {
        assert!(
            started.elapsed() < DELIVERY_TIMEOUT,
            "agent still holds deleted files: {:?}",
            agent.open_deleted_files()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the agent has `path` open (it follows the file; a file is
/// only followed once it has content, for its fingerprint).
fn wait_file_open(agent: &crate::support::logship::Agent, path: &std::path::Path) {
    let started = Instant::now();
    loop {
        let open = std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .any(|p| p == path)
            })
            .unwrap_or(false);
        if open {
            return;
        }
        assert!(
            started.elapsed() < DELIVERY_TIMEOUT,
            "agent never opened {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn buffer_dir_bytes(setup: &Setup) -> u64 {
    std::fs::read_dir(setup.data_dir().join("buffer"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn outage_longer_than_the_files_live_loses_and_duplicates_nothing() {
    let es: &Elasticsearch = elasticsearch::shared();
    let proxy = Proxy::start(es.url());
    let name = "disk-outage";
    let setup = disk_setup(
        name,
        &proxy.url(),
        Options {
            format: "cri",
            batch_max_events: 200,
            ..Options::default()
        },
        "{type: disk, max_bytes: 64MiB, fsync_interval: 100ms}",
    );
    let mut expected = Vec::new();
    let path = setup.log("app.log");
    let mut w = LogWriter::create(&path);
    let mut agent = setup.start();
    write_lines(name, &mut w, 0..1000, &mut expected);
    wait_for_delivery(es, &setup.index_pattern, 1000, &mut agent);

    // Elasticsearch goes away.
    proxy.set_up(false);
    let mut next = 1000;
    for _ in 0..3 {
        write_lines(name, &mut w, next..next + 2000, &mut expected);
        next += 2000;
        let rotated = rotate_kubelet(&path);
        w = LogWriter::create(&path);
        write_lines(name, &mut w, next..next + 500, &mut expected);
        next += 500;
        wait_file_open(&agent, &path);
        // The kubelet deletes old rotations; the agent must have them durably.
        std::fs::remove_file(&rotated).expect("delete rotated file");
        wait_deleted_files_released(&agent);
    }
    // Let the last batches reach the disk and be fsync'd, then crash.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        es.count(&setup.index_pattern) < expected.len() as u64,
        "the outage should hold lines back"
    );
    assert!(
        buffer_dir_bytes(&setup) > 0,
        "the disk buffer holds the backlog"
    );
    agent.kill_9();
    // Still down after the restart: the buffer is replayed later, and
    // rotations keep happening.
    agent.restart();
    // A file deleted before the agent opened it cannot be read by anyone.
    wait_file_open(&agent, &path);
    write_lines(name, &mut w, next..next + 1000, &mut expected);
    next += 1000;
    let rotated = rotate_kubelet(&path);
    w = LogWriter::create(&path);
    std::fs::remove_file(&rotated).expect("delete rotated file");
    wait_deleted_files_released(&agent);
    write_lines(name, &mut w, next..next + 500, &mut expected);
    std::thread::sleep(Duration::from_millis(1000));
    agent.assert_running();

    // Elasticsearch is back.
    proxy.set_up(true);
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
}

/// Rotated files stay in the glob (`*.log*`) so that after a kill the agent
/// finds a rotated file whose lines were not durable yet; files are never
/// deleted here (a file deleted before its lines were durable is lost to
/// any shipper that is killed at that moment).
fn kill_loop(name: &str, kills: usize) {
    let es: &Elasticsearch = elasticsearch::shared();
    let setup = disk_setup(
        name,
        es.url(),
        Options {
            format: "cri",
            include: "*.log*",
            batch_max_events: 200,
            ..Options::default()
        },
        "{type: disk, max_bytes: 64MiB, fsync_interval: 50ms}",
    );
    let mut expected = Vec::new();
    let paths = [setup.log("a.log"), setup.log("b.log")];
    let mut writers: Vec<LogWriter> = paths.iter().map(|p| LogWriter::create(p)).collect();
    let mut agent = setup.start();
    let mut next = 0;
    for round in 0..kills {
        for (i, w) in writers.iter_mut().enumerate() {
            write_lines(name, w, next..next + 1500, &mut expected);
            if (round + i) % 3 == 0 {
                rotate_kubelet(&paths[i]);
                *w = LogWriter::create(&paths[i]);
            }
        }
        next += 1500;
        std::thread::sleep(Duration::from_millis(fastrand::u64(100..1200)));
        agent.assert_running();
        agent.kill_9();
        eprintln!(
            "{name} round {round}: killed with {} of {} lines indexed",
            es.count(&setup.index_pattern),
            expected.len()
        );
        agent.restart();
    }
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
}

#[test]
fn kill_9_loop_with_disk_buffer() {
    kill_loop("disk-kill9", 5);
}

/// `cargo test --test e2e kill_9_loop_long -- --ignored`
#[test]
#[ignore = "long: 25 kills"]
fn kill_9_loop_long_with_disk_buffer() {
    kill_loop("disk-kill9-long", 25);
}
