//! Document encoding and gzip of the bulk body.
//!
//! - `encode/lines`: `Encoder::encode` over realistic lines (messages of
//!   80–400 bytes; plain text, JSON-shaped with quotes to escape, non-ASCII),
//!   throughput per byte of input message.
//! - `processors/none` and `processors/typical`: per line, decoded lines
//!   (the messages above, one in five an nginx access line, one in twenty a
//!   health check) encoded as they are, and run through a typical chain
//!   first (drop health checks by regex, dissect access lines, add two
//!   static fields; the dropped lines are not encoded). Throughput per line;
//!   the difference is the chain's CPU per line.
//! - `gzip/<corpus>/<method>`: a ~4 MiB NDJSON bulk body made by the
//!   encoder, as the sink holds it (spans of 100 lines), compressed by the
//!   sink's own `gzip` (ISA-L's igzip, `isal-N`; level 1 is the default),
//!   by flate2 (its configured backend, `zlib-rs`) streaming over the spans
//!   at levels 1 and 2 (`zlib-rs-N`; the sink before ISA-L), and by
//!   libdeflate (`libdeflater`) at levels 1–3 on a contiguous copy, the
//!   copy included (`libdeflate-N`). Throughput per byte of NDJSON; each
//!   method's ratio is printed. Corpora: `easy` (the messages above, one
//!   file) and `realistic` (the `catch-up` scenario's generator,
//!   `pipeline/scenarios/messages.rs`, 20 files taking turns).
//!
//! Times are the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not
//! wall time, so figures are per core and stay meaningful on a machine shared
//! with other work; elsewhere than 64-bit Linux, wall time.

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flate2::Compression;
use flate2::write::GzEncoder;
use logship::encode::Encoder;
use logship::event::{DecodedLine, EncodedSpan, FileIdentity, LineFlags, Stream, Timestamp};

// Only the generator's `new` and `message` are used here.
#[allow(dead_code)]
#[path = "pipeline/scenarios/messages.rs"]
mod messages;
use messages::MessageGen;

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu_time() -> Option<Duration> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec (two 64-bit fields on 64-bit
    // Linux), and the libc std links provides `clock_gettime`.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

/// Runs `f` `iters` times and returns the thread CPU time it took (wall time
/// if the CPU clock is unavailable).
fn cpu_timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let wall = Instant::now();
    let start = thread_cpu_time();
    for _ in 0..iters {
        f();
    }
    match (start, thread_cpu_time()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => wall.elapsed(),
    }
}

const WORDS: &[&str] = &[
    "request",
    "handled",
    "user",
    "session",
    "GET",
    "/api/v1/orders",
    "status",
    "200",
    "latency",
    "ms",
    "cache",
    "miss",
    "db",
    "query",
    "retry",
    "upstream",
    "timeout",
    "connection",
    "pool",
    "worker",
    "started",
    "shutdown",
];
const NON_ASCII: &[&str] = &["Grüße", "naïve", "日本語", "ログ", "✓", "€", "Привет", "😀"];

/// One message of 80–400 bytes: 50% plain, 35% JSON-shaped, 15% non-ASCII.
fn message(rng: &mut fastrand::Rng) -> String {
    let target = rng.usize(80..=400);
    let kind = rng.u8(0..100);
    let mut text = String::with_capacity(target + 40);
    if kind < 35 {
        text.push_str(r#"{"level":"info","ts":"2026-11-26T01:02:03.123Z","msg":""#);
        while text.len() < target - 30 {
            text.push_str(WORDS[rng.usize(..WORDS.len())]);
            text.push(' ');
        }
        text.push_str(r#"","caller":"srv/handler.go:42"}"#);
    } else {
        while text.len() < target {
            if kind >= 85 && rng.bool() {
                text.push_str(NON_ASCII[rng.usize(..NON_ASCII.len())]);
            } else {
                text.push_str(WORDS[rng.usize(..WORDS.len())]);
            }
            text.push(' ');
        }
    }
    text
}

fn corpus(count: usize) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(42);
    (0..count).map(|_| message(&mut rng)).collect()
}

fn encode_all(
    encoder: &mut Encoder,
    file: &logship::encode::FileContext,
    messages: &[String],
    out: &mut EncodedSpan,
) {
    let mut offset = 0u64;
    let base = Timestamp {
        secs: 1_795_698_000,
        nanos: 0,
    };
    for (i, m) in messages.iter().enumerate() {
        let line = DecodedLine {
            timestamp: Timestamp {
                secs: base.secs + (i / 1000) as i64,
                nanos: (i as u32 % 1000) * 1_000_017,
            },
            stream: Some(if i % 5 == 0 {
                Stream::Stderr
            } else {
                Stream::Stdout
            }),
            message: m.as_bytes(),
            flags: LineFlags::empty(),
            offset,
            end: offset + m.len() as u64 + 40,
        };
        offset = line.end;
        black_box(encoder.encode(file, &line, out));
    }
}

fn bench_encode(c: &mut Criterion) {
    let messages = corpus(10_000);
    let input_bytes: usize = messages.iter().map(String::len).sum();
    let mut encoder = Encoder::new("node-1", "logs-%Y.%m.%d").expect("valid template");
    let identity = FileIdentity {
        dev: 64769,
        ino: 1234,
        fingerprint: 0xfeed,
    };
    let file = encoder.file_context(
        Path::new("/var/log/pods/default_web-7d4b9_0f1e/app/0.log"),
        identity,
        0,
    );
    let mut out = EncodedSpan::default();

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(input_bytes as u64));
    group.bench_function("lines", |b| {
        b.iter_custom(|iters| {
            cpu_timed(iters, || {
                out.body.clear();
                out.items.clear();
                encode_all(&mut encoder, &file, &messages, &mut out);
            })
        })
    });
    group.finish();
    eprintln!(
        "encode: {} messages, {} message bytes -> {} NDJSON bytes ({:.2}x)",
        messages.len(),
        input_bytes,
        out.body.len(),
        out.body.len() as f64 / input_bytes as f64
    );
}

/// A bulk body as the sink holds it: spans of NDJSON (one per run of lines
/// read from one file), about 4 MiB in all, `files` files taking turns
/// every 100 lines; `next(file, out)` appends file `file`'s next message.
fn bulk_body(files: usize, mut next: impl FnMut(usize, &mut String)) -> Vec<Vec<u8>> {
    let mut encoder = Encoder::new("node-1", "logs-%Y.%m.%d").expect("valid template");
    let contexts: Vec<_> = (0..files)
        .map(|f| {
            let identity = FileIdentity {
                dev: 64769,
                ino: 1234 + f as u64,
                fingerprint: 0xfeed,
            };
            let path = format!("/var/log/pods/default_web-7d4b9-{f}_0f1e/app/0.log");
            encoder.file_context(Path::new(&path), identity, 0)
        })
        .collect();
    let mut spans = Vec::new();
    let mut total = 0;
    for f in (0..files).cycle() {
        let mut span = EncodedSpan::default();
        let messages: Vec<String> = (0..100)
            .map(|_| {
                let mut message = String::new();
                next(f, &mut message);
                message
            })
            .collect();
        encode_all(&mut encoder, &contexts[f], &messages, &mut span);
        total += span.body.len();
        spans.push(std::mem::take(&mut span.body));
        if total >= 4 << 20 {
            return spans;
        }
    }
    unreachable!("the cycle ends when the body is full")
}

/// gzip as the sink did before ISA-L (and still does at levels 4-9): flate2 (zlib-rs) streaming
/// over the spans, no copy.
fn gzip_streaming(spans: &[Vec<u8>], level: u32) -> Vec<u8> {
    let raw: usize = spans.iter().map(Vec::len).sum();
    let mut gz = GzEncoder::new(Vec::with_capacity(raw / 4 + 64), Compression::new(level));
    for span in spans {
        gz.write_all(span).expect("writing to a Vec");
    }
    gz.finish().expect("writing to a Vec")
}

/// What the sink does now: `sink::elasticsearch::gzip` (ISA-L's igzip for
/// levels 1-3), streaming over the spans, no copy.
fn gzip_sink(spans: &[Vec<u8>], level: u32) -> Vec<u8> {
    let raw: usize = spans.iter().map(Vec::len).sum();
    logship::sink::elasticsearch::gzip::gzip(spans.iter().map(Vec::as_slice), raw, level)
        .expect("gzip")
}

/// libdeflate, whole-buffer: the spans copied into one buffer first (the
/// copy and every allocation are part of the cost).
fn gzip_whole(spans: &[Vec<u8>], level: i32) -> Vec<u8> {
    let raw: usize = spans.iter().map(Vec::len).sum();
    let mut input = Vec::with_capacity(raw);
    for span in spans {
        input.extend_from_slice(span);
    }
    let mut compressor =
        libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).expect("1-12"));
    let mut out = vec![0; compressor.gzip_compress_bound(input.len())];
    let len = compressor
        .gzip_compress(&input, &mut out)
        .expect("the bound is enough");
    out.truncate(len);
    out
}

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

fn bench_gzip(c: &mut Criterion) {
    // The bench's first corpus (one file) and the catch-up scenario's.
    let mut rng = fastrand::Rng::with_seed(42);
    let easy = bulk_body(1, |_, out| out.push_str(&message(&mut rng)));
    let mut generators: Vec<_> = (0..20).map(|f| MessageGen::new(1000 + f)).collect();
    let realistic = bulk_body(20, |f, out| generators[f].message(out));

    type Gzip = fn(&[Vec<u8>]) -> Vec<u8>;
    let methods: [(&str, Gzip); 7] = [
        ("isal-1 (the sink)", |s| gzip_sink(s, 1)),
        ("isal-2", |s| gzip_sink(s, 2)),
        ("zlib-rs-1", |s| gzip_streaming(s, 1)),
        ("zlib-rs-2", |s| gzip_streaming(s, 2)),
        ("libdeflate-1", |s| gzip_whole(s, 1)),
        ("libdeflate-2", |s| gzip_whole(s, 2)),
        ("libdeflate-3", |s| gzip_whole(s, 3)),
    ];
    for (corpus, spans) in [("easy", &easy), ("realistic", &realistic)] {
        let ndjson = spans.concat();
        let mut group = c.benchmark_group(format!("gzip/{corpus}"));
        group.throughput(Throughput::Bytes(ndjson.len() as u64));
        group.sample_size(20);
        for (name, gzip) in methods {
            let compressed = gzip(spans);
            assert!(gunzip(&compressed) == ndjson, "{name} must round-trip");
            eprintln!(
                "gzip/{corpus}/{name}: {} NDJSON bytes in {} spans -> {} ({:.2}x)",
                ndjson.len(),
                spans.len(),
                compressed.len(),
                ndjson.len() as f64 / compressed.len() as f64
            );
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    cpu_timed(iters, || {
                        black_box(gzip(spans));
                    })
                })
            });
        }
        group.finish();
    }
}

const TYPICAL_CHAIN: &str = r#"
- drop: {when: {regex: {message: '"GET /healthz'}}}
- parse:
    dissect: '%{client} - - [%{time}] "%{method} %{path} %{?protocol}" %{status} %{bytes}'
    target: http
    on_failure: keep
- add_fields: {fields: {cluster: bench-1, env: prod}}
"#;

fn bench_processors(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(7);
    let messages: Vec<String> = corpus(10_000)
        .into_iter()
        .enumerate()
        .map(|(i, m)| match i % 20 {
            0 => r#"10.0.0.1 - - [26/Nov/2026:01:02:03 +0000] "GET /healthz HTTP/1.1" 200 2"#.to_owned(),
            1..=4 => format!(
                r#"10.{}.{}.7 - - [26/Nov/2026:01:02:{:02} +0000] "GET /api/v1/orders/{} HTTP/1.1" 200 {}"#,
                rng.u8(..),
                rng.u8(..),
                rng.u8(..60),
                rng.u32(..),
                rng.u16(..)
            ),
            _ => m,
        })
        .collect();
    let specs: Vec<logship::processors::ProcessorSpec> =
        serde_yaml_ng::with::singleton_map_recursive::deserialize(
            serde_yaml_ng::Deserializer::from_str(TYPICAL_CHAIN),
        )
        .expect("the chain parses");
    let chain = logship::processors::Chain::compile(
        "bench",
        &logship::processors::source_lists(0, &specs, &[]),
        &|_| Default::default(),
    )
    .expect("the chain compiles")
    .expect("not empty");
    let path = Path::new("/var/log/pods/default_web-7d4b9_0f1e/app/0.log");
    let mut processor = logship::processors::FileProcessor::for_file(
        Some(std::sync::Arc::new(chain)),
        &Default::default(),
        path,
        "node-1",
    )
    .expect("a processor");
    let mut encoder = Encoder::new("node-1", "logs-%Y.%m.%d").expect("valid template");
    let identity = FileIdentity {
        dev: 64769,
        ino: 1234,
        fingerprint: 0xfeed,
    };
    let file = encoder.file_context(path, identity, 0);
    let lines: Vec<DecodedLine<'_>> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| DecodedLine {
            timestamp: Timestamp {
                secs: 1_795_698_000 + (i / 1000) as i64,
                nanos: 0,
            },
            stream: Some(Stream::Stdout),
            message: m.as_bytes(),
            flags: LineFlags::empty(),
            offset: i as u64 * 300,
            end: i as u64 * 300 + 300,
        })
        .collect();
    let mut out = EncodedSpan::default();
    let mut group = c.benchmark_group("processors");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("none", |b| {
        b.iter_custom(|iters| {
            cpu_timed(iters, || {
                out.body.clear();
                out.items.clear();
                for line in &lines {
                    black_box(encoder.encode(&file, line, &mut out));
                }
            })
        })
    });
    let mut kept = 0;
    group.bench_function("typical", |b| {
        b.iter_custom(|iters| {
            cpu_timed(iters, || {
                out.body.clear();
                out.items.clear();
                for line in &lines {
                    if let Some(p) = processor.process(line) {
                        black_box(encoder.encode_processed(&file, line, &p, &mut out));
                    }
                }
                kept = out.items.len();
            })
        })
    });
    group.finish();
    eprintln!(
        "processors: {} lines, {kept} kept by the typical chain",
        lines.len()
    );
}

criterion_group!(benches, bench_encode, bench_processors, bench_gzip);
criterion_main!(benches);
