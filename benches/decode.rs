//! Decode throughput on generated container logs, in bytes of raw input.
//!
//! The corpus: messages of 80–400 bytes — plain words, JSON-shaped
//! application logs, text with non-ASCII characters — and a few long lines
//! that the runtime split (CRI `P` parts at 16 KiB, docker chunks at 16 KiB).
//! Lines are split once up front, so this measures the decoder alone (the
//! reader's `memchr` split runs at several GiB/s).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logship::config::SourceFormat;
use logship::decode::LineDecoder;
use logship::event::Timestamp;
use std::hint::black_box;

const CORPUS_BYTES: usize = 16 << 20;
const SPLIT_AT: usize = 16 * 1024;

fn message(rng: &mut fastrand::Rng) -> String {
    const WORDS: &[&str] = &[
        "request",
        "completed",
        "user",
        "GET",
        "/api/v1/orders",
        "status=200",
        "in",
        "12ms",
        "cache",
        "miss",
        "retrying",
        "connection",
        "upstream",
        "timeout",
        "ok",
    ];
    const NON_ASCII: &[&str] = &["Größe", "überprüft", "日本語のログ", "ошибка", "😀", "café"];
    if rng.u32(0..2000) == 0 {
        // A long line the runtime will split.
        return "x".repeat(rng.usize(SPLIT_AT + 1..3 * SPLIT_AT));
    }
    let len = rng.usize(80..=400);
    let mut text = String::with_capacity(len + 40);
    let kind = rng.u8(0..10);
    while text.len() < len {
        let word = if kind >= 8 && rng.bool() {
            NON_ASCII[rng.usize(..NON_ASCII.len())]
        } else {
            WORDS[rng.usize(..WORDS.len())]
        };
        text.push_str(word);
        text.push(' ');
    }
    if kind < 3 {
        // JSON-shaped, as structured application logs are.
        format!(
            r#"{{"level":"info","ts":1780000000.123,"msg":"{}","caller":"main.go:42"}}"#,
            text.trim_end()
        )
    } else {
        text
    }
}

fn time(i: u64) -> String {
    let secs = 1_780_000_000 + i / 1000;
    let dt = chrono::DateTime::from_timestamp(secs as i64, (i % 1000 * 997_001) as u32).unwrap();
    dt.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn cri_corpus() -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(1);
    let mut out = Vec::with_capacity(CORPUS_BYTES + 64 * 1024);
    let mut i = 0;
    while out.len() < CORPUS_BYTES {
        let msg = message(&mut rng);
        let stream = if rng.u8(0..10) == 0 {
            "stderr"
        } else {
            "stdout"
        };
        let t = time(i);
        let chunks: Vec<&[u8]> = msg.as_bytes().chunks(SPLIT_AT).collect();
        for (n, c) in chunks.iter().enumerate() {
            let tag = if n + 1 == chunks.len() { "F" } else { "P" };
            out.extend_from_slice(format!("{t} {stream} {tag} ").as_bytes());
            out.extend_from_slice(c);
            out.push(b'\n');
        }
        i += 1;
    }
    out
}

fn docker_corpus() -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(1);
    let mut out = Vec::with_capacity(CORPUS_BYTES + 64 * 1024);
    let mut i = 0;
    while out.len() < CORPUS_BYTES {
        let msg = message(&mut rng) + "\n";
        let stream = if rng.u8(0..10) == 0 {
            "stderr"
        } else {
            "stdout"
        };
        let t = time(i);
        // All-ASCII long lines, so byte chunks are char chunks.
        for c in msg.as_bytes().chunks(SPLIT_AT) {
            let log = serde_json::to_string(std::str::from_utf8(c).unwrap()).unwrap();
            out.extend_from_slice(
                format!(r#"{{"log":{log},"stream":"{stream}","time":"{t}"}}"#).as_bytes(),
            );
            out.push(b'\n');
        }
        i += 1;
    }
    out
}

/// `(start, end)` of each line, without its `\n`.
fn split_lines(data: &[u8]) -> Vec<(usize, usize)> {
    let mut lines = Vec::new();
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', data) {
        lines.push((start, nl));
        start = nl + 1;
    }
    lines
}

fn decode_all(format: SourceFormat, data: &[u8], lines: &[(usize, usize)]) -> usize {
    let mut decoder = LineDecoder::new(format, 1 << 20);
    let now = Timestamp::now();
    let mut bytes = 0;
    let mut emit = |l: &logship::event::DecodedLine<'_>| {
        bytes += l.message.len() + l.timestamp.nanos as usize;
    };
    for &(s, e) in lines {
        decoder.decode(&data[s..e], s as u64, e as u64 + 1, false, now, &mut emit);
    }
    decoder.finish(now, &mut emit);
    bytes
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, format, data) in [
        ("cri", SourceFormat::Cri, cri_corpus()),
        ("docker", SourceFormat::Docker, docker_corpus()),
    ] {
        let lines = split_lines(&data);
        // Sanity: every line decodes without being flagged unparsed.
        let mut decoder = LineDecoder::new(format, 1 << 20);
        for &(s, e) in &lines {
            decoder.decode(&data[s..e], 0, 1, false, Timestamp::now(), &mut |_| {});
        }
        assert_eq!(decoder.take_stats().unparsed_lines, 0, "{name} corpus");

        group.throughput(Throughput::Bytes(data.len() as u64));
        group.sample_size(10);
        group.bench_function(name, |b| {
            b.iter(|| decode_all(format, black_box(&data), black_box(&lines)))
        });
    }
    group.finish();
}

/// A CRI corpus in which 5 % of events are Java traces (a header and 8–30
/// frames, some with `Caused by:`), the rest [`message`]s.
fn trace_corpus() -> (Vec<u8>, usize) {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut out = Vec::with_capacity(CORPUS_BYTES + 64 * 1024);
    let (mut i, mut events) = (0u64, 0);
    while out.len() < CORPUS_BYTES {
        let t = time(i);
        if rng.u8(0..100) < 5 {
            let mut lines = vec![format!(
                "java.lang.IllegalStateException: request {i} failed: {}",
                message(&mut rng).chars().take(60).collect::<String>()
            )];
            for f in 0..rng.usize(8..30) {
                if f == 12 {
                    lines.push("Caused by: java.io.IOException: connection reset".into());
                }
                lines.push(format!(
                    "\tat com.example.service.Handler{f}.handle(Handler{f}.java:{})",
                    rng.u32(10..900)
                ));
            }
            lines.push(format!("\t... {} more", rng.u32(1..40)));
            for l in lines {
                out.extend_from_slice(format!("{t} stderr F {l}\n").as_bytes());
            }
        } else {
            let msg: String = message(&mut rng).chars().take(400).collect();
            out.extend_from_slice(format!("{t} stdout F {msg}\n").as_bytes());
        }
        events += 1;
        i += 1;
    }
    (out, events)
}

/// Decode and encode every line of `data`, through `rules` if given.
fn decode_encode(
    data: &[u8],
    lines: &[(usize, usize)],
    rules: Option<&std::sync::Arc<logship::decode::multiline::Rules>>,
    encoder: &mut logship::encode::Encoder,
    file: &logship::encode::FileContext,
    span: &mut logship::event::EncodedSpan,
) -> usize {
    let mut decoder = LineDecoder::new(SourceFormat::Cri, 1 << 20);
    let mut joiner = rules.map(|r| logship::decode::multiline::Joiner::new(r.clone()));
    let now = Timestamp::now();
    let mut events = 0;
    let mut sink = |l: &logship::event::DecodedLine<'_>| {
        if span.body.len() > 4 << 20 {
            span.body.clear();
            span.items.clear();
        }
        black_box(encoder.encode(file, l, span));
        events += 1;
    };
    for &(s, e) in lines {
        decoder.decode(
            &data[s..e],
            s as u64,
            e as u64 + 1,
            false,
            now,
            &mut |d| match joiner.as_mut() {
                Some(j) => j.push(d, &mut sink),
                None => sink(d),
            },
        );
    }
    if let Some(j) = joiner.as_mut() {
        j.flush(&mut sink);
    }
    events
}

/// The cost of `multiline: java` on a corpus with 5 % traces, against the
/// same lines decoded and encoded one document each (issue 12: at most
/// 15 % of catch-up throughput; this leaves gzip and HTTP out, so it
/// overstates the share).
fn bench_multiline(c: &mut Criterion) {
    use logship::decode::multiline::{Builtin, MultilineConfig};
    let (data, events) = trace_corpus();
    let lines = split_lines(&data);
    let rules = MultilineConfig::builtin(Builtin::Java, 1 << 20)
        .compile()
        .expect("built-in rule");
    let mut encoder =
        logship::encode::Encoder::new("node-1", "logs-%Y.%m.%d").expect("valid template");
    let file = encoder.file_context(
        std::path::Path::new("/var/log/pods/default_web-7d4b9_0f1e/app/0.log"),
        logship::event::FileIdentity {
            dev: 64769,
            ino: 1234,
            fingerprint: 0xfeed,
        },
        0,
    );
    let mut span = logship::event::EncodedSpan::default();
    // Sanity: with the rule, one document per event written.
    let joined = decode_encode(&data, &lines, Some(&rules), &mut encoder, &file, &mut span);
    assert_eq!(joined, events, "one document per event");
    let mut group = c.benchmark_group("multiline");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    for (name, rules) in [("none", None), ("java", Some(&rules))] {
        group.bench_function(name, |b| {
            b.iter(|| {
                decode_encode(
                    black_box(&data),
                    &lines,
                    rules,
                    &mut encoder,
                    &file,
                    &mut span,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_multiline);
criterion_main!(benches);
