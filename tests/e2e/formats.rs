//! Decoding, end to end: CRI and docker files with partial lines, unicode,
//! invalid UTF-8 and escapes, plain files, and lines over `max_line_bytes`.
//! Files are written while the agent runs, in chunks cut at arbitrary byte
//! positions, so the agent also sees half-written lines at end of file.

use crate::expect::{Line, assert_exactly_once};
use crate::scenario;
use crate::support::logship::{LogWriter, Options, cri_line, cri_split, docker_line, timestamp};
use std::time::Duration;

/// Writes `bytes` in pieces of `chunk` bytes (not aligned to lines), pausing
/// between pieces so the agent reads many partial tails.
fn write_in_chunks(writer: &mut LogWriter, bytes: &[u8], chunk: usize, pause: Duration) {
    for piece in bytes.chunks(chunk) {
        writer.write(piece);
        std::thread::sleep(pause);
    }
}

/// A message of `len` bytes that starts with `marker` and is unique to it.
fn long_message(marker: &str, len: usize) -> String {
    let mut message = String::with_capacity(len);
    message.push_str(marker);
    let filler = " the quick brown fox jumps over the lazy dog 0123456789";
    while message.len() < len {
        message.push_str(filler);
    }
    message.truncate(len);
    message
}

/// The same instant as `timestamp(seq)`, written with a `+02:00` offset.
fn with_offset(seq: u64) -> String {
    let utc = chrono::DateTime::parse_from_rfc3339(&timestamp(seq)).expect("own timestamp");
    let zone = chrono::FixedOffset::east_opt(2 * 3600).expect("offset");
    utc.with_timezone(&zone)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

#[test]
fn cri_partial_lines_unicode_and_invalid_utf8_arrive_exactly_once() {
    let (es, setup) = scenario(
        "cri",
        Options {
            format: "cri",
            ..Options::default()
        },
    );
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for seq in 0..400u64 {
        let stream = if seq % 3 == 0 { "stderr" } else { "stdout" };
        let ts = timestamp(seq);
        let marker = format!("cri seq={seq:06}");
        match seq % 10 {
            // containerd splits at 16 KiB: 40 KiB → P, P, F.
            0 => {
                let message = long_message(&marker, 40 * 1024);
                bytes.extend(cri_split(&ts, stream, message.as_bytes(), 16 * 1024));
                expected.push(Line::new(message, stream, &ts));
            }
            // CRI-O splits at 8 KiB: 20 KiB → P, P, F.
            1 => {
                let message = long_message(&marker, 20 * 1024);
                bytes.extend(cri_split(&ts, stream, message.as_bytes(), 8 * 1024));
                expected.push(Line::new(message, stream, &ts));
            }
            2 => {
                let message = format!("{marker} héllo wörld 日本語 Ελληνικά 🚀🦀 end");
                bytes.extend(cri_line(&ts, stream, "F", message.as_bytes()));
                expected.push(Line::new(message, stream, &ts));
            }
            // Lone bytes that are never valid UTF-8: each becomes one U+FFFD.
            3 => {
                let mut raw = marker.clone().into_bytes();
                raw.extend_from_slice(b" bad \xff\xfe bytes \x80 end");
                let message = String::from_utf8_lossy(&raw).into_owned();
                assert_eq!(message.matches('\u{FFFD}').count(), 3);
                bytes.extend(cri_line(&ts, stream, "F", &raw));
                expected.push(Line::new(message, stream, &ts).flagged("invalid_utf8"));
            }
            // Characters the JSON encoder must escape.
            4 => {
                let message = format!(
                    "{marker} quote\" backslash\\ tab\t bell\u{7} {{\"json\":[1,2]}} </script> end"
                );
                bytes.extend(cri_line(&ts, stream, "F", message.as_bytes()));
                expected.push(Line::new(message, stream, &ts));
            }
            // A time zone offset instead of Z.
            5 => {
                let message = format!("{marker} with an offset time");
                bytes.extend(cri_line(&with_offset(seq), stream, "F", message.as_bytes()));
                expected.push(Line::new(message, stream, &ts));
            }
            // Short P parts, a multi-byte character split across two parts.
            6 => {
                let message = format!("{marker} split é across parts");
                let raw = message.as_bytes();
                let cut = message.find('é').expect("é") + 1;
                bytes.extend(cri_line(&ts, stream, "P", &raw[..cut]));
                bytes.extend(cri_line(&ts, stream, "P", &raw[cut..cut + 3]));
                bytes.extend(cri_line(&ts, stream, "F", &raw[cut + 3..]));
                expected.push(Line::new(message, stream, &ts));
            }
            _ => {
                let message = format!("{marker} an ordinary line of text");
                bytes.extend(cri_line(&ts, stream, "F", message.as_bytes()));
                expected.push(Line::new(message, stream, &ts));
            }
        }
    }

    let path = setup.log("0.log");
    let mut writer = LogWriter::create(&path);
    let half = bytes.len() / 2;
    writer.write(&bytes[..half]);
    let mut agent = setup.start();
    write_in_chunks(&mut writer, &bytes[half..], 7919, Duration::from_millis(3));
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);

    let docs = es.search_all(&setup.index_pattern);
    let path_text = path.display().to_string();
    assert!(
        docs.iter()
            .all(|d| d["log"]["file"]["path"] == path_text.as_str()),
        "log.file.path should be {path_text}"
    );
    let mut offsets: Vec<u64> = docs
        .iter()
        .map(|d| d["log"]["offset"].as_u64().expect("offset"))
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(
        offsets.len(),
        docs.len(),
        "two documents with the same log.offset"
    );
    assert_eq!(offsets[0], 0, "the first line starts at offset 0");
}

#[test]
fn docker_chunks_escapes_and_unicode_arrive_exactly_once() {
    let (es, setup) = scenario(
        "docker",
        Options {
            format: "docker",
            ..Options::default()
        },
    );
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for seq in 0..400u64 {
        let stream = if seq % 4 == 0 { "stderr" } else { "stdout" };
        let ts = timestamp(seq);
        let marker = format!("docker seq={seq:06}");
        match seq % 6 {
            // A line over docker's 16 KiB buffer: chunks without `\n`, then the end.
            0 => {
                let message = long_message(&marker, 40 * 1024);
                let (a, rest) = message.split_at(16 * 1024);
                let (b, c) = rest.split_at(16 * 1024);
                bytes.extend(docker_line(&ts, stream, a));
                bytes.extend(docker_line(&ts, stream, b));
                bytes.extend(docker_line(&ts, stream, &format!("{c}\n")));
                expected.push(Line::new(message, stream, &ts));
            }
            1 => {
                let message = format!("{marker} héllo wörld 日本語 🚀🦀 end");
                bytes.extend(docker_line(&ts, stream, &format!("{message}\n")));
                expected.push(Line::new(message, stream, &ts));
            }
            // Docker (Go) escapes <, > and & as \u003c, \u003e, \u0026.
            2 => {
                let message = format!("{marker} <b>html & \"quotes\"</b>\ttab \\ end");
                let line = String::from_utf8(docker_line(&ts, stream, &format!("{message}\n")))
                    .expect("utf-8")
                    .replace('<', "\\u003c")
                    .replace('>', "\\u003e")
                    .replace('&', "\\u0026");
                bytes.extend(line.into_bytes());
                expected.push(Line::new(message, stream, &ts));
            }
            // A short line split in two chunks.
            3 => {
                let message = format!("{marker} two chunks, one line");
                let (a, b) = message.split_at(10);
                bytes.extend(docker_line(&ts, stream, a));
                bytes.extend(docker_line(&ts, stream, &format!("{b}\n")));
                expected.push(Line::new(message, stream, &ts));
            }
            _ => {
                let message = format!("{marker} an ordinary docker line");
                bytes.extend(docker_line(&ts, stream, &format!("{message}\n")));
                expected.push(Line::new(message, stream, &ts));
            }
        }
    }

    let mut writer = LogWriter::create(&setup.log("container-json.log"));
    let mut agent = setup.start();
    write_in_chunks(&mut writer, &bytes, 5003, Duration::from_millis(3));
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
}

#[test]
fn auto_detects_cri_and_docker_per_file() {
    let (es, setup) = scenario("auto", Options::default());
    let mut expected = Vec::new();
    let mut cri = Vec::new();
    let mut docker = Vec::new();
    for seq in 0..100u64 {
        let ts = timestamp(seq);
        let message = format!("auto cri seq={seq:06}");
        cri.extend(cri_line(&ts, "stdout", "F", message.as_bytes()));
        expected.push(Line::new(message, "stdout", &ts));
        let message = format!("auto docker seq={seq:06}");
        docker.extend(docker_line(&ts, "stderr", &format!("{message}\n")));
        expected.push(Line::new(message, "stderr", &ts));
    }
    LogWriter::create(&setup.log("cri.log")).write(&cri);
    LogWriter::create(&setup.log("docker.log")).write(&docker);
    let mut agent = setup.start();
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
}

#[test]
fn plain_lines_with_crlf_and_invalid_utf8_arrive_exactly_once() {
    let (es, setup) = scenario(
        "plain",
        Options {
            format: "plain",
            ..Options::default()
        },
    );
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for seq in 0..300u64 {
        let marker = format!("plain seq={seq:06}");
        let (raw, line) = match seq % 3 {
            0 => {
                let message = format!("{marker} a windows line");
                (format!("{message}\r\n").into_bytes(), Line::plain(message))
            }
            1 => {
                let mut raw = format!("{marker} latin-1 caf").into_bytes();
                raw.extend_from_slice(b"\xe9 end\n");
                let message = String::from_utf8_lossy(&raw[..raw.len() - 1]).into_owned();
                (raw, Line::plain(message).flagged("invalid_utf8"))
            }
            _ => {
                let message = format!("{marker} ünïcödé ✓");
                (format!("{message}\n").into_bytes(), Line::plain(message))
            }
        };
        bytes.extend(raw);
        expected.push(line);
    }
    let mut writer = LogWriter::create(&setup.log("app.log"));
    let mut agent = setup.start();
    write_in_chunks(&mut writer, &bytes, 1009, Duration::from_millis(2));
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
    // 100 lines had invalid UTF-8: logged once for the file, not per line.
    let log = std::fs::read_to_string(setup.stderr_path()).unwrap_or_default();
    let reports = log.matches("file has malformed lines").count();
    assert_eq!(reports, 1, "one report for the file, got {reports}:\n{log}");
    assert!(log.contains("app.log"), "the report names the file:\n{log}");
}

#[test]
fn a_line_over_max_line_bytes_is_cut_and_flagged_and_the_next_line_is_intact() {
    let max = 4096;
    let (es, setup) = scenario(
        "truncate",
        Options {
            format: "cri",
            max_line_bytes: max,
            ..Options::default()
        },
    );
    let ts = timestamp(1);
    let long = long_message("truncate seq=000001", 10_000);
    let mut bytes = cri_split(&ts, "stdout", long.as_bytes(), 3000);
    let mut expected = Vec::new();
    for seq in 2..50u64 {
        let ts = timestamp(seq);
        let message = format!("truncate seq={seq:06} after the long line");
        bytes.extend(cri_line(&ts, "stdout", "F", message.as_bytes()));
        expected.push(Line::new(message, "stdout", &ts));
    }
    LogWriter::create(&setup.log("0.log")).write(&bytes);
    let mut agent = setup.start();

    let total = expected.len() as u64 + 1;
    let count = crate::expect::wait_for_delivery(es, &setup.index_pattern, total, &mut agent);
    assert_eq!(count, total, "stderr:\n{}", agent.stderr_tail(30));
    let docs = es.search_all(&setup.index_pattern);
    let (cut, rest): (Vec<_>, Vec<_>) = docs.into_iter().partition(|d| {
        d["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("truncate seq=000001"))
    });
    assert_eq!(cut.len(), 1, "the long line is indexed once: {cut:?}");
    let message = cut[0]["message"].as_str().expect("message");
    assert!(
        message.len() <= max && message.len() + 64 >= max,
        "cut line is {} bytes, max_line_bytes is {max}",
        message.len()
    );
    assert!(
        long.starts_with(message),
        "the cut line is a prefix of the line written"
    );
    assert_eq!(cut[0]["log"]["flags"], serde_json::json!(["truncated"]));
    assert_eq!(cut[0]["stream"], "stdout");
    if let Err(report) = crate::expect::compare(&expected, &rest) {
        panic!("lines after the long one:\n{report}");
    }
    agent.assert_running();
}
