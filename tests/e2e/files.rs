//! What happens to files under the agent: kubelet rotation by rename while
//! the container writes, logrotate's copytruncate, and a file deleted before
//! the agent read it. After each, every line is indexed exactly once, and a
//! deleted file's descriptor is closed so its disk space comes back.

use crate::expect::{Line, assert_exactly_once, wait_for_delivery};
use crate::scenario;
use crate::support::logship::{
    Agent, LogWriter, Options, copytruncate, cri_line, rotate_kubelet, timestamp,
};
use std::time::{Duration, Instant};

fn cri_options() -> Options {
    Options {
        format: "cri",
        ..Options::default()
    }
}

/// Line `seq` of test `name`: the CRI bytes and what must be indexed.
fn line(name: &str, seq: u64) -> (Vec<u8>, Line) {
    let ts = timestamp(seq);
    let stream = if seq.is_multiple_of(5) {
        "stderr"
    } else {
        "stdout"
    };
    let message = format!("{name} seq={seq:06} some log text to give the line a realistic length");
    (
        cri_line(&ts, stream, "F", message.as_bytes()),
        Line::new(message, stream, &ts),
    )
}

/// Waits until the agent holds no descriptor of a deleted file.
fn assert_deleted_files_released(agent: &Agent, timeout: Duration) {
    let started = Instant::now();
    loop {
        let open = agent.open_deleted_files();
        if open.is_empty() {
            return;
        }
        if started.elapsed() > timeout {
            panic!(
                "logship still holds deleted files open {timeout:?} after their lines were \
                 delivered (their disk space is not released): {open:?}\n{}",
                agent.stderr_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kubelet_rotation_while_writing_loses_and_duplicates_nothing() {
    let (es, setup) = scenario("rotate", cri_options());
    let path = setup.log("0.log");
    let mut expected = Vec::new();
    let mut rotated = Vec::new();
    let mut writer = LogWriter::create(&path);
    let mut agent = setup.start();
    let mut seq = 0;
    for _round in 0..5 {
        for _ in 0..600 {
            let (bytes, line) = line("rotate", seq);
            writer.write(&bytes);
            expected.push(line);
            seq += 1;
            if seq % 100 == 0 {
                std::thread::sleep(Duration::from_millis(15));
            }
        }
        rotated.push(rotate_kubelet(&path));
        // The runtime still writes to the renamed file until it reopens.
        for _ in 0..3 {
            let (bytes, line) = line("rotate", seq);
            writer.write(&bytes);
            expected.push(line);
            seq += 1;
        }
        writer = LogWriter::create(&path);
    }
    for _ in 0..200 {
        let (bytes, line) = line("rotate", seq);
        writer.write(&bytes);
        expected.push(line);
        seq += 1;
    }
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);

    // Kubelet deletes old rotated files; the agent must then let them go.
    for file in &rotated {
        std::fs::remove_file(file).expect("remove rotated file");
    }
    assert_deleted_files_released(&agent, Duration::from_secs(10));
    agent.assert_running();
}

/// The banner an application logs when it starts: a first line whose first
/// 256+ bytes (the agent's fingerprint window) are the same every time, with
/// a unique marker after them.
fn banner(seq: u64) -> (Vec<u8>, Line) {
    let ts = timestamp(0);
    let text = "copytruncate app starting: ".to_string() + &"version 1.2.3 config ok; ".repeat(12);
    let message = format!("{text}seq={seq:06}");
    (
        cri_line(&ts, "stdout", "F", message.as_bytes()),
        Line::new(message, "stdout", &ts),
    )
}

#[test]
fn copytruncate_ships_old_and_new_content_exactly_once() {
    let (es, setup) = scenario("copytruncate", cri_options());
    let path = setup.log("app.log");
    let mut expected = Vec::new();
    let mut writer = LogWriter::create(&path);
    let mut seq = 0;
    let mut write_lines = |writer: &mut LogWriter, expected: &mut Vec<Line>, n: u64| {
        for _ in 0..n {
            let (bytes, line) = if seq == 0 || seq == 300 {
                banner(seq)
            } else {
                line("copytruncate", seq)
            };
            writer.write(&bytes);
            expected.push(line);
            seq += 1;
        }
    };
    write_lines(&mut writer, &mut expected, 300);
    let mut agent = setup.start();
    let count = wait_for_delivery(es, &setup.index_pattern, 300, &mut agent);
    assert_eq!(
        count,
        300,
        "before truncation; stderr:\n{}",
        agent.stderr_tail(30)
    );

    // Copy to a name the glob does not match, truncate in place, and keep
    // writing through the same (O_APPEND) descriptor. The new content is
    // shorter than what was read, so the agent sees the file shrink. It
    // starts with the same banner, so the file's first bytes (and so its
    // fingerprint) are as before: only the generation tells the new lines'
    // `_id`s from those of the old lines at the same offsets.
    copytruncate(&path, &setup.log("app.log.1"));
    write_lines(&mut writer, &mut expected, 100);
    let count = wait_for_delivery(es, &setup.index_pattern, 400, &mut agent);
    assert_eq!(
        count,
        400,
        "lines written after the truncation (at offsets already shipped once) were not \
         all indexed; stderr:\n{}",
        agent.stderr_tail(30)
    );
    // Past the old size again.
    write_lines(&mut writer, &mut expected, 400);
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
}

#[test]
fn a_file_deleted_before_it_was_read_is_shipped_and_released() {
    let (es, setup) = scenario("deleted", cri_options());
    let path = setup.log("gone.log");
    let mut expected = Vec::new();
    let mut writer = LogWriter::create(&path);
    let (bytes, first) = line("deleted", 0);
    writer.write(&bytes);
    expected.push(first);
    let mut agent = setup.start();
    // Once the first line is in, the agent has the file open.
    let count = wait_for_delivery(es, &setup.index_pattern, 1, &mut agent);
    assert_eq!(count, 1, "stderr:\n{}", agent.stderr_tail(30));

    // Write a lot in one go and delete the file at once: most of it is
    // unread when the name disappears.
    let mut bulk = Vec::new();
    for seq in 1..20_000 {
        let (bytes, line) = line("deleted", seq);
        bulk.extend(bytes);
        expected.push(line);
    }
    writer.write(&bulk);
    drop(writer);
    std::fs::remove_file(&path).expect("delete log file");

    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
    assert_deleted_files_released(&agent, Duration::from_secs(10));
    agent.assert_running();
}
