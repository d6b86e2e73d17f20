//! The disk buffer end to end: Elasticsearch unreachable for longer than the
//! log files survive (rotated and deleted the kubelet way during the outage,
//! and the agent killed meanwhile), and a `kill -9` loop while shipping with
//! rotation going on; a disk buffer left holding lines when the config is
//! switched to `buffer: memory` (restart, SIGHUP, and a stop before it
//! drained). Afterwards the index must hold every line exactly once.
//!
//! The outage is a TCP proxy between the agent and the shared node that the
//! test switches off (connections refused and open ones cut), so the shared
//! node keeps serving the other tests.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::expect::{
    DELIVERY_TIMEOUT, Line, assert_exactly_once, cri_stdout, wait_for_delivery, write_numbered,
};
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
    write_numbered(name, &mut w, 0..1000, &mut expected, None);
    wait_for_delivery(es, &setup.index_pattern, 1000, &mut agent);

    // Elasticsearch goes away.
    proxy.set_up(false);
    let mut next = 1000;
    for _ in 0..3 {
        write_numbered(name, &mut w, next..next + 2000, &mut expected, None);
        next += 2000;
        let rotated = rotate_kubelet(&path);
        w = LogWriter::create(&path);
        write_numbered(name, &mut w, next..next + 500, &mut expected, None);
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
    write_numbered(name, &mut w, next..next + 1000, &mut expected, None);
    next += 1000;
    let rotated = rotate_kubelet(&path);
    w = LogWriter::create(&path);
    std::fs::remove_file(&rotated).expect("delete rotated file");
    wait_deleted_files_released(&agent);
    write_numbered(name, &mut w, next..next + 500, &mut expected, None);
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
            write_numbered(name, w, next..next + 1500, &mut expected, None);
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

/// Rotated or deleted files this agent holds open: fds into `logs` other
/// than the live file `live` (a rotated name, or a deleted file).
fn held_files(pid: u32, logs: &std::path::Path, live: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(logs) && p != live)
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

fn deleted_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|p| p.to_string_lossy().ends_with(" (deleted)"))
                .count()
        })
        .unwrap_or(0)
}

/// `buffer.max_open_files` with Elasticsearch away and the memory buffer
/// full: the kubelet rotates and deletes four files with unread data. The
/// agent never holds more than the limit of deleted files open (each rename
/// is given time to be noticed before the deletion, as the kubelet's
/// rotations are minutes apart); it gives up the two oldest, and the bytes
/// it counts as lost are exactly what of them was never shipped. Once
/// Elasticsearch is back every line of the other files is indexed once.
#[test]
fn past_max_open_files_the_oldest_deleted_files_are_given_up_and_counted() {
    const LIMIT: usize = 2;
    const LINES: u64 = 6000;
    let es: &Elasticsearch = elasticsearch::shared();
    let proxy = Proxy::start(es.url());
    let name = "max-open-files";
    let options = Options {
        format: "cri",
        batch_max_events: 200,
        ..Options::default()
    };
    let setup = disk_setup(name, &proxy.url(), options, "{type: memory}");
    let port = crate::ops::free_port();
    let yaml = format!(
        "{}    retry: {{initial_backoff: 50ms, max_backoff: 1s}}\nshutdown_timeout: 2s\n\
         buffer: {{type: memory, max_open_files: {LIMIT}}}\nhttp: {{listen: \"127.0.0.1:{port}\"}}\n",
        setup.config_yaml()
    );
    std::fs::write(setup.config_path(), yaml).expect("write config");

    // Lines of each file, in order, with their sizes in bytes.
    let mut files: Vec<Vec<(Line, u64)>> = vec![Vec::new()];
    let mut next = 0u64;
    let mut write = |w: &mut LogWriter, file: &mut Vec<(Line, u64)>, part: usize, n: u64| {
        let mut bytes = Vec::new();
        for seq in next..next + n {
            let mut one = Vec::new();
            let line = cri_stdout(
                seq,
                format!(
                    "{name} part{part} seq={seq:06} a line written while Elasticsearch is away"
                ),
                &mut one,
            );
            file.push((one.remove(0), line.len() as u64));
            bytes.extend(line);
        }
        next += n;
        w.write(&bytes);
    };
    let path = setup.log("app.log");
    let logs = setup.logs();
    let mut w = LogWriter::create(&path);
    write(&mut w, &mut files[0], 0, 200);
    let mut agent = setup.start();
    wait_for_delivery(es, &setup.index_pattern, 200, &mut agent);

    proxy.set_up(false);
    write(&mut w, &mut files[0], 0, LINES);
    let pid = agent.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while !stop.load(Ordering::SeqCst) {
                most = most.max(deleted_count(pid));
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        })
    };
    for part in 1..=4 {
        // The follower reads until downstream is full.
        std::thread::sleep(Duration::from_millis(500));
        let rotated = rotate_kubelet(&path);
        w = LogWriter::create(&path);
        files.push(Vec::new());
        write(&mut w, &mut files[part], part, LINES);
        wait_file_open(&agent, &path);
        let started = Instant::now();
        while held_files(pid, &logs, &path).len() > LIMIT {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "agent holds more than {LIMIT} rotated files: {:?}\n{}",
                held_files(pid, &logs, &path),
                agent.stderr_tail(20)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::remove_file(&rotated).expect("delete rotated file");
    }
    std::thread::sleep(Duration::from_millis(1500));
    agent.assert_running();
    stop.store(true, Ordering::SeqCst);
    let most = sampler.join().expect("sampler");
    assert!(
        most <= LIMIT,
        "{most} deleted files held open at once, limit {LIMIT}"
    );
    assert_eq!(
        deleted_count(pid),
        LIMIT,
        "the two newest deleted files are held with their unread lines"
    );
    let m = crate::ops::scrape(port, &mut agent);
    let lost_counted = crate::ops::value(
        &m,
        "logship_dropped_bytes_total",
        &[("reason", "max_open_files")],
    )
    .expect("lost bytes counter");

    // Elasticsearch is back: wait until the index stops growing.
    proxy.set_up(true);
    let kept: Vec<Line> = files[2..]
        .iter()
        .flatten()
        .map(|(l, _)| l.clone())
        .collect();
    let started = Instant::now();
    let mut last = u64::MAX;
    loop {
        agent.assert_running();
        let count = es.count(&setup.index_pattern);
        if count >= kept.len() as u64 && count == last {
            break;
        }
        assert!(
            started.elapsed() < DELIVERY_TIMEOUT,
            "{count} documents, at least {} expected",
            kept.len()
        );
        last = count;
        std::thread::sleep(Duration::from_millis(1000));
    }
    // The given-up files (the two oldest): what was shipped of each is its
    // first lines; the rest is what the counter says was lost.
    let docs = es.search_all(&setup.index_pattern);
    let indexed: std::collections::HashSet<&str> =
        docs.iter().filter_map(|d| d["message"].as_str()).collect();
    let mut expected = kept;
    let mut lost = 0u64;
    for (i, file) in files[..2].iter().enumerate() {
        let shipped = file
            .iter()
            .take_while(|(l, _)| indexed.contains(l.message.as_str()))
            .count();
        let size: u64 = file.iter().map(|(_, n)| n).sum();
        let shipped_bytes: u64 = file[..shipped].iter().map(|(_, n)| n).sum();
        assert!(
            shipped < file.len(),
            "file {i} was given up with unread lines"
        );
        lost += size - shipped_bytes;
        expected.extend(file[..shipped].iter().map(|(l, _)| l.clone()));
    }
    assert_eq!(lost_counted, lost as f64, "bytes counted as lost");
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
}

/// How a config switch from `buffer: disk` to `memory` reaches the agent.
#[derive(Clone, Copy, Debug)]
enum Switch {
    /// SIGTERM, new config, start again.
    Restart,
    /// New config, SIGHUP (the disk pipeline is drained, a memory one starts).
    Reload,
    /// SIGTERM, `memory` with Elasticsearch still unreachable, start, SIGTERM
    /// before the leftover could be sent, then start with it reachable.
    RestartStillAway,
}

/// The committed offset of the checkpoint of the file named `file`, from
/// `data_dir/checkpoints.json` (0 if there is none yet).
pub(crate) fn checkpoint_offset(setup: &Setup, file: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(setup.data_dir().join("checkpoints.json")) else {
        return 0;
    };
    let json: serde_json::Value = serde_json::from_str(&text).expect("checkpoints.json");
    json["checkpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["path"].as_str().is_some_and(|p| p.ends_with(file)))
        .filter_map(|c| c["offset"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Issue 9 case 6: lines fsync'd into the disk buffer while Elasticsearch
/// is unreachable (their file checkpoints already past them), then the
/// config switched to `buffer: memory` with a reachable Elasticsearch. The
/// leftover buffer is drained alongside the new lines, every line is
/// indexed exactly once, and `<data_dir>/buffer` is released.
fn disk_to_memory(name: &str, switch: Switch) {
    let es: &Elasticsearch = elasticsearch::shared();
    let closed = format!("http://127.0.0.1:{}", crate::ops::free_port());
    let setup = disk_setup(
        name,
        &closed,
        Options {
            format: "cri",
            batch_max_events: 100,
            ..Options::default()
        },
        "{type: disk, max_bytes: 64MiB, fsync_interval: 100ms}",
    );
    let disk_config = std::fs::read_to_string(setup.config_path()).expect("read config");
    let mut expected = Vec::new();
    let mut w = LogWriter::create(&setup.log("app.log"));
    let written = write_numbered(name, &mut w, 0..2000, &mut expected, None);
    let mut agent = setup.start();

    // The buffer owns the lines once the checkpoint is past them.
    let started = Instant::now();
    while checkpoint_offset(&setup, "app.log") < written {
        agent.assert_running();
        assert!(
            started.elapsed() < DELIVERY_TIMEOUT,
            "checkpoint at {} of {written} bytes:\n{}",
            checkpoint_offset(&setup, "app.log"),
            agent.stderr_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(buffer_dir_bytes(&setup) > 0, "the disk buffer holds them");
    assert_eq!(
        es.count(&setup.index_pattern),
        0,
        "nothing reached the index"
    );

    let memory_config = disk_config.replace(&closed, es.url()).replace(
        "buffer: {type: disk, max_bytes: 64MiB, fsync_interval: 100ms}",
        "buffer: {type: memory}",
    );
    assert!(memory_config.contains("buffer: {type: memory}") && memory_config.contains(es.url()));
    match switch {
        Switch::Restart | Switch::RestartStillAway => {
            let status = agent.sigterm(Duration::from_secs(30));
            assert!(status.success(), "{status}:\n{}", agent.stderr_tail(30));
            assert_eq!(
                checkpoint_offset(&setup, "app.log"),
                written,
                "checkpoint past the buffered lines"
            );
            if matches!(switch, Switch::RestartStillAway) {
                let away = memory_config.replace(es.url(), &closed);
                std::fs::write(setup.config_path(), away).expect("write config");
                agent.restart();
                let started = Instant::now();
                while !agent.stderr_tail(20).contains("leftover disk buffer found") {
                    agent.assert_running();
                    assert!(
                        started.elapsed() < DELIVERY_TIMEOUT,
                        "{}",
                        agent.stderr_tail(30)
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
                let status = agent.sigterm(Duration::from_secs(30));
                assert!(status.success(), "{status}:\n{}", agent.stderr_tail(30));
                assert!(
                    agent
                        .stderr_tail(20)
                        .contains("leftover disk buffer not drained yet"),
                    "{}",
                    agent.stderr_tail(30)
                );
                assert!(buffer_dir_bytes(&setup) > 0, "the leftover stays on disk");
            }
            std::fs::write(setup.config_path(), &memory_config).expect("write config");
            agent.restart();
        }
        Switch::Reload => {
            std::fs::write(setup.config_path(), &memory_config).expect("write config");
            agent.sighup();
        }
    }
    // New lines while the leftover drains.
    write_numbered(name, &mut w, 2000..3000, &mut expected, None);
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);

    let buffer = setup.data_dir().join("buffer");
    let started = Instant::now();
    while buffer.exists() {
        agent.assert_running();
        assert!(
            started.elapsed() < DELIVERY_TIMEOUT,
            "{} is still there:\n{}",
            buffer.display(),
            agent.stderr_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = agent.stderr_tail(200);
    assert!(log.contains("leftover disk buffer found"), "{log}");
    assert!(log.contains("leftover disk buffer drained"), "{log}");
}

#[test]
fn disk_buffer_left_by_a_switch_to_memory_is_drained_after_restart() {
    disk_to_memory("disk-leftover-restart", Switch::Restart);
}

#[test]
fn disk_buffer_left_by_a_switch_to_memory_survives_a_stop_before_it_is_drained() {
    disk_to_memory("disk-leftover-stopped", Switch::RestartStillAway);
}

#[test]
fn disk_buffer_left_by_a_switch_to_memory_is_drained_after_reload() {
    disk_to_memory("disk-leftover-reload", Switch::Reload);
}
