//! Container runtimes appending CRI lines at a steady rate.
//!
//! A few threads share the files round-robin (thread `k` owns files `k`,
//! `k + n`, …), never one thread per file. Every 5 ms a thread appends to
//! each of its files the lines that are due by then: file `i` at `rate`
//! lines/s has written `floor(rate · t + phase_i)` lines `t` seconds in,
//! with phases spread over the files so that a thousand files at 10 lines/s
//! do not all write in the same tick. Each line is its own `write(2)`, as
//! containerd writes them: `<now, RFC 3339 ns> stdout F id=<file>.<seq>
//! t=<ns> <message>`, the message from the realistic generator's short
//! templates of at most ~140 bytes (about 170 bytes per CRI line), `t` the write time in nanoseconds
//! since the endpoint's epoch.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::corpus::cri_time;
use super::messages::MessageGen;

/// Builds CRI lines carrying the ledger's marker.
pub struct LineMaker {
    messages: MessageGen,
    epoch: Instant,
    message: String,
}

impl LineMaker {
    pub fn new(seed: u64, epoch: Instant) -> LineMaker {
        LineMaker {
            messages: MessageGen::new(seed),
            epoch,
            message: String::with_capacity(512),
        }
    }

    /// One `F` line for `file`'s line `seq`, stamped now; returns its write
    /// time in ns since the epoch (also in the message).
    pub fn line(&mut self, out: &mut Vec<u8>, file: u32, seq: u64) -> u64 {
        let now = chrono::Utc::now();
        let written_at = self.epoch.elapsed().as_nanos() as u64;
        self.message.clear();
        write!(self.message, "id={file}.{seq} t={written_at} ").expect("write to string");
        self.messages.short_message(&mut self.message, 140);
        out.clear();
        out.extend_from_slice(cri_time(now.timestamp(), now.timestamp_subsec_nanos()).as_bytes());
        out.extend_from_slice(b" stdout F ");
        out.extend_from_slice(self.message.as_bytes());
        out.push(b'\n');
        written_at
    }
}

/// Appends `count` lines (`seq` from `first`) to `path` at once.
pub fn append_lines(
    maker: &mut LineMaker,
    path: &std::path::Path,
    file: u32,
    first: u64,
    count: u64,
) -> u64 {
    let mut out = open(path);
    let mut line = Vec::new();
    let mut bytes = 0;
    for seq in first..first + count {
        maker.line(&mut line, file, seq);
        out.write_all(&line)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        bytes += line.len() as u64;
    }
    bytes
}

fn open(path: &std::path::Path) -> File {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// One file the writers append to.
#[derive(Clone, Debug)]
pub struct WriterFile {
    pub path: PathBuf,
    /// The marker's file number.
    pub file: u32,
    /// Lines per second.
    pub rate: f64,
    /// The first sequence number to write (lines before it exist already).
    pub first_seq: u64,
}

/// Running writer threads.
pub struct Writers {
    stop: Arc<AtomicBool>,
    lines: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    threads: Vec<JoinHandle<ThreadReport>>,
}

struct ThreadReport {
    /// (index into the files given to `start`, next sequence number).
    next_seq: Vec<(usize, u64)>,
    longest_gap: Duration,
}

/// What the writers did.
#[derive(Debug)]
pub struct WriteReport {
    /// Per file given to [`Writers::start`], in order: lines now in the
    /// file (its next sequence number).
    pub lines_in_file: Vec<u64>,
    /// Lines written by the writers (not counting `first_seq`).
    pub lines: u64,
    pub bytes: u64,
    /// The longest time between two passes of a thread over its files (the
    /// pass is every 5 ms; more means the writers fell behind).
    pub longest_gap: Duration,
}

const TICK: Duration = Duration::from_millis(5);

impl Writers {
    pub fn start(files: Vec<WriterFile>, threads: usize, epoch: Instant) -> Writers {
        let threads = threads.clamp(1, files.len().max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let lines = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let handles = (0..threads)
            .map(|k| {
                let mine: Vec<(usize, WriterFile)> = files
                    .iter()
                    .enumerate()
                    .skip(k)
                    .step_by(threads)
                    .map(|(i, f)| (i, f.clone()))
                    .collect();
                let (stop, lines, bytes) = (stop.clone(), lines.clone(), bytes.clone());
                std::thread::Builder::new()
                    .name(format!("bench-writer-{k}"))
                    .spawn(move || {
                        write_loop(mine, k as u64, epoch, started, &stop, &lines, &bytes)
                    })
                    .expect("spawn writer thread")
            })
            .collect();
        Writers {
            stop,
            lines,
            bytes,
            threads: handles,
        }
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// Stops writing (each thread finishes its pass) and reports.
    pub fn stop(self, files: usize) -> WriteReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut lines_in_file = vec![0; files];
        let mut longest_gap = Duration::ZERO;
        for handle in self.threads {
            let report = handle.join().expect("a writer thread panicked");
            for (i, next) in report.next_seq {
                lines_in_file[i] = next;
            }
            longest_gap = longest_gap.max(report.longest_gap);
        }
        WriteReport {
            lines_in_file,
            lines: self.lines.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            longest_gap,
        }
    }
}

fn write_loop(
    files: Vec<(usize, WriterFile)>,
    seed: u64,
    epoch: Instant,
    started: Instant,
    stop: &AtomicBool,
    lines: &AtomicU64,
    bytes: &AtomicU64,
) -> ThreadReport {
    let mut maker = LineMaker::new(0x5752_4954 + seed, epoch);
    let mut open: Vec<File> = files.iter().map(|(_, f)| open(&f.path)).collect();
    // Phases spread evenly (golden ratio) over all files, whichever thread.
    let phases: Vec<f64> = files
        .iter()
        .map(|(i, _)| (*i as f64 * 0.618_033_988_75).fract())
        .collect();
    let mut written = vec![0u64; files.len()];
    let mut line = Vec::with_capacity(512);
    let mut longest_gap = Duration::ZERO;
    let mut last_pass = Instant::now();
    let mut next_pass = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        longest_gap = longest_gap.max(now - last_pass);
        last_pass = now;
        let t = started.elapsed().as_secs_f64();
        for (k, (_, file)) in files.iter().enumerate() {
            let due = (t * file.rate + phases[k]).floor() as u64;
            while written[k] < due {
                maker.line(&mut line, file.file, file.first_seq + written[k]);
                open[k]
                    .write_all(&line)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.path.display()));
                written[k] += 1;
                lines.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
            }
        }
        next_pass += TICK;
        let now = Instant::now();
        if next_pass > now {
            std::thread::sleep(next_pass - now);
        } else {
            next_pass = now;
        }
    }
    ThreadReport {
        next_seq: files
            .iter()
            .zip(&written)
            .map(|((i, f), w)| (*i, f.first_seq + w))
            .collect(),
        longest_gap,
    }
}
