//! Multiline events against real Elasticsearch: Java traces on stderr with
//! stdout lines interleaved, a trace line split into CRI parts, a rotation
//! in the middle, and `kill -9` while shipping, with traces begun before a
//! kill and ended after it. Each trace must be one document (the exact
//! joined text, its first line's timestamp, `log.flags: ["multiline"]`),
//! every other line one document, each exactly once.

use crate::expect::{DELIVERY_TIMEOUT, Line, assert_exactly_once};
use crate::scenario;
use crate::support::logship::{LogWriter, Options, cri_line, timestamp};
use std::time::{Duration, Instant};

/// The source's multiline rule (a long timeout: only content, rotation
/// and the end of the test end a trace, not a slow machine).
const MULTILINE: &str = "    multiline: {rule: java, timeout: 3s}\n";

/// Writes unit `u` of `file`: two stdout lines, a stderr trace of a few
/// frames with a stdout line in the middle of it; every 5th unit splits a
/// frame into CRI `P` + `F` parts. Records what each becomes. With
/// `open_end`, the trace's last frames are not written (returned instead).
fn write_unit(
    w: &mut LogWriter,
    file: &str,
    u: u64,
    expected: &mut Vec<Line>,
    open_end: bool,
) -> Vec<Vec<u8>> {
    let seq = u * 10;
    let mut bytes = Vec::new();
    for i in 0..2 {
        let ts = timestamp(seq + i);
        let m = format!("{file} seq={:06} INFO handling request", seq + i);
        bytes.extend(cri_line(&ts, "stdout", "F", m.as_bytes()));
        expected.push(Line::new(m, "stdout", &ts));
    }
    let ts = timestamp(seq + 2);
    let header = format!(
        "java.lang.IllegalStateException: {file} seq={:06} failed",
        seq + 2
    );
    let frames: Vec<String> = (0..4)
        .map(|f| format!("\tat com.example.Handler.step{f}(Handler.java:{})", seq + f))
        .collect();
    let mut lines = vec![cri_line(&ts, "stderr", "F", header.as_bytes())];
    for (f, frame) in frames.iter().enumerate() {
        let fts = timestamp(seq + 3 + f as u64);
        if u.is_multiple_of(5) && f == 1 {
            let (a, b) = frame.split_at(12);
            lines.push(cri_line(&fts, "stderr", "P", a.as_bytes()));
            lines.push(cri_line(&fts, "stderr", "F", b.as_bytes()));
        } else {
            lines.push(cri_line(&fts, "stderr", "F", frame.as_bytes()));
        }
        if f == 1 {
            // Another stream in the middle of the trace.
            let its = timestamp(seq + 8);
            let m = format!("{file} seq={:06} INFO meanwhile on stdout", seq + 8);
            lines.push(cri_line(&its, "stdout", "F", m.as_bytes()));
            expected.push(Line::new(m, "stdout", &its));
        }
    }
    let mut joined = vec![header];
    joined.extend(frames);
    expected.push(Line::new(joined.join("\n"), "stderr", &ts).flagged("multiline"));
    let rest = if open_end {
        lines.split_off(lines.len() - 2)
    } else {
        Vec::new()
    };
    for l in lines {
        bytes.extend(l);
    }
    w.write(&bytes);
    rest
}

#[test]
fn java_traces_are_one_document_each_across_rotation_and_kill_9() {
    let (es, setup) = scenario(
        "multiline",
        Options {
            format: "cri",
            batch_max_events: 50,
            ..Options::default()
        },
    );
    let yaml = setup.config_yaml().replace(
        "    max_line_bytes:",
        &format!("{MULTILINE}    max_line_bytes:"),
    );
    std::fs::write(setup.config_path(), yaml).expect("write config");

    let mut expected = Vec::new();
    let mut a = LogWriter::create(&setup.log("a.log"));
    let mut b = LogWriter::create(&setup.log("b.log"));
    let mut u = 0;
    // `n` units in each file; with `open`, a.log's last trace is left
    // open and the rest of it returned.
    let mut units =
        |a: &mut LogWriter, b: &mut LogWriter, n: u64, open: bool, expected: &mut Vec<Line>| {
            let mut rest = Vec::new();
            for i in 0..n {
                rest = write_unit(a, "a", u, expected, open && i + 1 == n);
                write_unit(b, "b", u, expected, false);
                u += 1;
            }
            rest
        };
    units(&mut a, &mut b, 1500, false, &mut expected);
    let mut agent = setup.start();
    let mut kills_mid_stream = 0;
    for round in 0..3 {
        let before = es.count(&setup.index_pattern);
        let started = Instant::now();
        let seen = loop {
            agent.assert_running();
            let count = es.count(&setup.index_pattern);
            if count > before || started.elapsed() > DELIVERY_TIMEOUT {
                break count;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            seen > before,
            "round {round}: nothing shipped:\n{}",
            agent.stderr_tail(30)
        );
        // A trace begun before the kill and ended after it: read and held
        // open (its timeout is 3 s), the lines after it shipped and their
        // checkpoint written, then killed.
        let rest = units(&mut a, &mut b, 1, true, &mut expected);
        std::thread::sleep(Duration::from_millis(1500));
        agent.kill_9();
        kills_mid_stream += usize::from(seen < expected.len() as u64);
        for l in rest {
            a.write(&l);
        }
        units(&mut a, &mut b, 600, false, &mut expected);
        if round == 1 {
            // Rotated while down, a trace at the very end of the old file:
            // read to its end after the restart, the trace ended there.
            std::fs::rename(setup.log("b.log"), setup.log("b.log.1")).expect("rotate");
            b = LogWriter::create(&setup.log("b.log"));
        }
        agent.restart();
    }
    // Rotated while running.
    units(&mut a, &mut b, 50, false, &mut expected);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::rename(setup.log("a.log"), setup.log("a.log.1")).expect("rotate");
    let mut a = LogWriter::create(&setup.log("a.log"));
    units(&mut a, &mut b, 50, false, &mut expected);
    assert!(
        kills_mid_stream > 0,
        "no kill happened mid-stream; the test needs more lines"
    );
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
}
