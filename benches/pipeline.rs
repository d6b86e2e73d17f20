//! End-to-end throughput bench: files → logship (the real binary, release
//! build) → a local `_bulk` endpoint.
//!
//! Generates a CRI corpus (default ~1 GiB in 20 files; messages of 80–400
//! bytes, some JSON-shaped, some non-ASCII, a few split into `P` parts),
//! starts a minimal bulk endpoint in this process that gunzips each request,
//! counts its items and answers every item `201` in Elasticsearch's format,
//! runs `logship run` on the corpus and waits until every logical line has
//! been acknowledged. Reports MiB/s of raw input, logship's CPU seconds per
//! GiB (user + system, from /proc) and its peak RSS (VmHWM).
//!
//! `cargo bench --bench pipeline` — environment: `LOGSHIP_BENCH_MIB` (corpus
//! size, default 1024), `LOGSHIP_BENCH_FILES` (default 20),
//! `LOGSHIP_BENCH_DIR` (where the corpus is cached, default
//! `/var/tmp/logship-bench`), `LOGSHIP_BENCH_CONCURRENCY` (default 2),
//! `LOGSHIP_BENCH_BUFFER` (`memory`, the default, or `disk`: the disk
//! buffer in the run's data dir, fsync every second; or `compare`: memory
//! and disk runs interleaved, m,d,m,d,..., `LOGSHIP_BENCH_ROUNDS` rounds
//! (default 3) on the same corpus, printing every run, each round's
//! disk/memory ratio and their median, so that load from other processes
//! weighs on both alike).
//!
//! `LOGSHIP_BENCH_OUTAGE=<seconds>`: instead, run with the disk buffer and
//! the endpoint unreachable (a closed port) for that long, printing
//! logship's RSS, peak RSS and the buffer's size every 5 s: memory must stay
//! flat while the backlog grows on disk.
//!
//! The endpoint shares the machine's cores with logship; its gunzip costs
//! about a fifth of a core at full speed, which is reflected in MiB/s but not
//! in logship's CPU seconds.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes the corpus if it is not there yet; returns (raw bytes, logical lines).
fn corpus(dir: &Path, total_mib: u64, files: u64) -> (u64, u64) {
    let marker = dir.join(format!("corpus-{total_mib}-{files}.done"));
    if let Ok(s) = std::fs::read_to_string(&marker) {
        let mut it = s.split_whitespace().filter_map(|v| v.parse().ok());
        if let (Some(b), Some(l)) = (it.next(), it.next()) {
            return (b, l);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create corpus dir");
    let per_file = total_mib * 1024 * 1024 / files;
    let mut rng = fastrand::Rng::with_seed(42);
    let words = [
        "request",
        "GET",
        "/api/v1/orders",
        "completed",
        "in",
        "ms",
        "user",
        "id",
        "cache",
        "miss",
        "upstream",
        "timeout",
        "retrying",
        "connection",
        "reset",
        "by",
        "peer",
    ];
    let unicode = ["Grüße", "日本語のログ", "émoji 🚀", "Привет", "naïve café"];
    let (mut total_bytes, mut total_lines) = (0u64, 0u64);
    for f in 0..files {
        let path = dir.join(format!("pod{f:02}/0.log"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let mut out =
            BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).expect("create"));
        let mut written = 0u64;
        let mut secs = 1_790_000_000u64 + f * 7;
        let mut msg = String::with_capacity(512);
        while written < per_file {
            secs += u64::from(rng.u8(..3));
            let nanos = rng.u32(..1_000_000_000);
            let len = rng.usize(80..=400);
            msg.clear();
            let kind = rng.u8(..10);
            if kind < 3 {
                msg.push_str(r#"{"level":"info","msg":"#);
                msg.push('"');
            }
            while msg.len() < len {
                if kind == 3 && rng.u8(..4) == 0 {
                    msg.push_str(unicode[rng.usize(..unicode.len())]);
                } else {
                    msg.push_str(words[rng.usize(..words.len())]);
                }
                msg.push(' ');
            }
            if kind < 3 {
                msg.push_str(r#"","trace_id":"abc123","latency_ms":42}"#);
            }
            let stream = if rng.u8(..8) == 0 { "stderr" } else { "stdout" };
            let ts = chrono::DateTime::from_timestamp(secs as i64, nanos)
                .expect("valid time")
                .format("%Y-%m-%dT%H:%M:%S%.9fZ");
            let mut line = String::new();
            // One line in fifty is split into P parts at char boundaries.
            if rng.u8(..50) == 0 && msg.len() > 100 {
                let mut cut = msg.len() / 2;
                while !msg.is_char_boundary(cut) {
                    cut += 1;
                }
                line.push_str(&format!("{ts} {stream} P {}\n", &msg[..cut]));
                line.push_str(&format!("{ts} {stream} F {}\n", &msg[cut..]));
            } else {
                line.push_str(&format!("{ts} {stream} F {msg}\n"));
            }
            out.write_all(line.as_bytes()).expect("write");
            written += line.len() as u64;
            total_lines += 1;
        }
        out.flush().expect("flush");
        total_bytes += written;
    }
    std::fs::write(&marker, format!("{total_bytes} {total_lines}")).expect("marker");
    (total_bytes, total_lines)
}

/// A `_bulk` endpoint that acknowledges every item with 201.
async fn serve(listener: tokio::net::TcpListener, items: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let items = items.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let items = items.clone();
                async move {
                    if req.uri().path() == "/" {
                        // The agent's start-up version check (`GET /`).
                        let root = r#"{"version":{"number":"8.19.8"}}"#;
                        return Ok::<_, hyper::Error>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(root.as_bytes())))
                                .expect("response"),
                        );
                    }
                    let gz = req
                        .headers()
                        .get("content-encoding")
                        .is_some_and(|v| v.as_bytes() == b"gzip");
                    let body = req.into_body().collect().await?.to_bytes();
                    let n = tokio::task::spawn_blocking(move || {
                        let mut newlines = 0usize;
                        if gz {
                            let mut d = flate2::read::MultiGzDecoder::new(&body[..]);
                            let mut buf = vec![0u8; 1 << 16];
                            loop {
                                let k = d.read(&mut buf).unwrap_or(0);
                                if k == 0 {
                                    break;
                                }
                                newlines += memchr::memchr_iter(b'\n', &buf[..k]).count();
                            }
                        } else {
                            newlines = memchr::memchr_iter(b'\n', &body).count();
                        }
                        newlines / 2
                    })
                    .await
                    .unwrap_or(0);
                    let mut resp = String::with_capacity(32 + n * 28);
                    resp.push_str(r#"{"took":1,"errors":false,"items":["#);
                    for i in 0..n {
                        if i > 0 {
                            resp.push(',');
                        }
                        resp.push_str(r#"{"create":{"status":201}}"#);
                    }
                    resp.push_str("]}");
                    items.fetch_add(n as u64, Ordering::Relaxed);
                    Ok::<_, hyper::Error>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(resp)))
                            .expect("response"),
                    )
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn proc_stats(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime is field 14, stime 15 (1-based); `rest` starts at field 3.
    let cpu = (ticks(11) + ticks(12)) as f64 / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu, hwm_kib)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // useful either way: only run when asked for as a bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("pipeline bench: run with `cargo bench --bench pipeline`");
        return;
    }
    let mib = env_u64("LOGSHIP_BENCH_MIB", 1024);
    let files = env_u64("LOGSHIP_BENCH_FILES", 20);
    let concurrency = env_u64("LOGSHIP_BENCH_CONCURRENCY", 2);
    let root = PathBuf::from(
        std::env::var("LOGSHIP_BENCH_DIR").unwrap_or_else(|_| "/var/tmp/logship-bench".into()),
    );
    let corpus_dir = root.join("corpus");
    let t = Instant::now();
    let (raw_bytes, lines) = corpus(&corpus_dir, mib, files);
    println!(
        "corpus: {:.0} MiB, {lines} lines, {files} files ({:.1} s to prepare)",
        raw_bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    // Warm the page cache so the bench measures logship, not the disk.
    for e in glob::glob(&format!("{}/*/0.log", corpus_dir.display()))
        .expect("glob")
        .flatten()
    {
        let _ = std::io::copy(
            &mut std::fs::File::open(e).expect("open"),
            &mut std::io::sink(),
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let items = Arc::new(AtomicU64::new(0));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    rt.spawn(serve(listener, items.clone()));

    let outage = env_u64("LOGSHIP_BENCH_OUTAGE", 0);
    let mode = std::env::var("LOGSHIP_BENCH_BUFFER").unwrap_or_else(|_| "memory".into());
    if outage > 0 {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let work = root.join("run");
        let config = write_config(&work, &corpus_dir, port, concurrency, true);
        println!("buffer: disk");
        run_outage(&config, &work.join("data").join("buffer"), outage);
        return;
    }
    let bench = Bench {
        corpus_dir,
        work: root.join("run"),
        port,
        concurrency,
        items,
        lines,
        raw_bytes,
    };
    match mode.as_str() {
        "memory" | "disk" => {
            let disk = mode == "disk";
            println!("buffer: {mode}");
            let run = bench.run(disk);
            println!("delivered: {lines} of {lines} lines");
            println!(
                "throughput: {:.1} MiB/s of raw CRI input ({:.1} s)",
                run.mib_per_s, run.seconds
            );
            println!(
                "cpu: {:.2} CPU-seconds per GiB ({:.1} s total)",
                run.cpu_per_gib, run.cpu_seconds
            );
            println!("peak RSS: {:.1} MiB", run.peak_rss_mib);
        }
        "compare" => {
            let rounds = env_u64("LOGSHIP_BENCH_ROUNDS", 3).max(1);
            println!(
                "buffer: memory and disk interleaved, {rounds} rounds (m,d,m,d,...) on the same corpus"
            );
            let mut ratios = Vec::new();
            let (mut memory, mut disk) = (Vec::new(), Vec::new());
            for round in 1..=rounds {
                for (is_disk, name) in [(false, "memory"), (true, "disk")] {
                    let run = bench.run(is_disk);
                    println!(
                        "round {round} {name:>6}: {:>6.1} MiB/s  {:>5.1} s  {:>5.2} CPU-s/GiB  peak RSS {:>5.1} MiB",
                        run.mib_per_s, run.seconds, run.cpu_per_gib, run.peak_rss_mib
                    );
                    if is_disk {
                        disk.push(run.mib_per_s);
                    } else {
                        memory.push(run.mib_per_s);
                    }
                }
                let ratio = disk[disk.len() - 1] / memory[memory.len() - 1];
                println!("round {round} disk/memory: {:.1}%", ratio * 100.0);
                ratios.push(ratio);
            }
            println!(
                "median MiB/s: memory {:.1}, disk {:.1}",
                median(&mut memory),
                median(&mut disk)
            );
            println!(
                "disk/memory throughput, median of the {rounds} rounds' ratios: {:.1}%",
                median(&mut ratios) * 100.0
            );
        }
        other => panic!("LOGSHIP_BENCH_BUFFER={other}: expected memory, disk or compare"),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Writes a fresh run directory (no checkpoints, no buffer) and its config.
fn write_config(
    work: &Path,
    corpus_dir: &Path,
    port: u16,
    concurrency: u64,
    disk: bool,
) -> PathBuf {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).expect("work dir");
    let config = work.join("logship.yaml");
    let buffer = if disk {
        "buffer: {type: disk, max_bytes: 16GiB, fsync_interval: 1s}\n"
    } else {
        ""
    };
    std::fs::write(
        &config,
        format!(
            "node_name: bench\ndata_dir: {data}\nlog: {{level: warn}}\nsources:\n  - name: bench\n    include: [\"{corpus}/*/0.log\"]\n    format: cri\nsink:\n  elasticsearch:\n    hosts: [\"http://127.0.0.1:{port}\"]\n    index: \"logs-%Y.%m.%d\"\n    compression: {{gzip: 1}}\n    concurrency: {concurrency}\n{buffer}",
            data = work.join("data").display(),
            corpus = corpus_dir.display(),
        ),
    )
    .expect("config");
    config
}

/// What one run needs: the corpus, the endpoint and its item counter.
struct Bench {
    corpus_dir: PathBuf,
    work: PathBuf,
    port: u16,
    concurrency: u64,
    items: Arc<AtomicU64>,
    lines: u64,
    raw_bytes: u64,
}

/// The figures of one run.
struct Run {
    seconds: f64,
    mib_per_s: f64,
    cpu_seconds: f64,
    cpu_per_gib: f64,
    peak_rss_mib: f64,
}

impl Bench {
    /// Ships the whole corpus once, from a fresh data dir; panics unless
    /// every line is acknowledged exactly once.
    fn run(&self, disk: bool) -> Run {
        let config = write_config(
            &self.work,
            &self.corpus_dir,
            self.port,
            self.concurrency,
            disk,
        );
        self.items.store(0, Ordering::Relaxed);
        let lines = self.lines;
        let start = Instant::now();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_logship"))
            .args(["run", "--config"])
            .arg(&config)
            .spawn()
            .expect("spawn logship");
        let pid = child.id();
        let mut last = (0.0, 0);
        let deadline = start + Duration::from_secs(1800);
        while self.items.load(Ordering::Relaxed) < lines {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "timed out: {} of {lines} items",
                    self.items.load(Ordering::Relaxed)
                );
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("logship exited early: {status}");
            }
            last = proc_stats(pid);
            std::thread::sleep(Duration::from_millis(20));
        }
        let elapsed = start.elapsed().as_secs_f64();
        let (cpu, hwm_kib) = {
            let now = proc_stats(pid);
            if now.0 > 0.0 { now } else { last }
        };
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let _ = child.wait();
        let got = self.items.load(Ordering::Relaxed);
        assert_eq!(got, lines, "every line acknowledged exactly once");
        let gib = self.raw_bytes as f64 / (1u64 << 30) as f64;
        Run {
            seconds: elapsed,
            mib_per_s: self.raw_bytes as f64 / 1048576.0 / elapsed,
            cpu_seconds: cpu,
            cpu_per_gib: cpu / gib,
            peak_rss_mib: hwm_kib as f64 / 1024.0,
        }
    }
}

/// Runs logship against an unreachable endpoint for `secs` seconds and prints
/// its memory and the disk buffer's size over time.
fn run_outage(config: &Path, buffer_dir: &Path, secs: u64) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_logship"))
        .args(["run", "--config"])
        .arg(config)
        .spawn()
        .expect("spawn logship");
    let pid = child.id();
    let start = Instant::now();
    let mut peak_rss = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(5));
        if let Ok(Some(status)) = child.try_wait() {
            panic!("logship exited early: {status}");
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let (rss, hwm) = (kib("VmRSS:"), kib("VmHWM:"));
        peak_rss = peak_rss.max(hwm);
        let buffered: u64 = std::fs::read_dir(buffer_dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        println!(
            "t={:>4}s  rss={:>6.1} MiB  peak={:>6.1} MiB  disk buffer={:>8.1} MiB",
            start.elapsed().as_secs(),
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            buffered as f64 / 1048576.0
        );
    }
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = child.wait();
    println!("peak RSS under outage: {:.1} MiB", peak_rss as f64 / 1024.0);
}
