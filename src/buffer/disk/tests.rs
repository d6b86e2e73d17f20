use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::Ordering;

use super::*;

fn open(dir: &Path, max_bytes: u64) -> Queue {
    Queue::open(dir, Options::new(max_bytes), Arc::new(Stats::default())).unwrap()
}

fn payload(id: u64) -> Vec<u8> {
    format!("record-{id}-")
        .repeat(1 + id as usize % 7)
        .into_bytes()
}

fn drain(q: &mut Queue) -> Vec<u64> {
    let mut out = Vec::new();
    let mut p = Vec::new();
    while let Some(id) = q.read_next(&mut p).unwrap() {
        assert_eq!(p, payload(id), "payload of record {id}");
        out.push(id);
    }
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn push_read_ack_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = open(dir.path(), 1 << 30);
    for i in 0..10 {
        assert_eq!(q.push(&payload(i)).unwrap(), i);
    }
    assert_eq!(drain(&mut q), (0..10).collect::<Vec<_>>());
    for id in [0, 1, 2, 5, 6] {
        q.ack(id);
    }
    assert_eq!(q.ack_watermark(), 3);
    q.flush().unwrap();
    drop(q);
    let mut q = open(dir.path(), 1 << 30);
    assert_eq!(
        drain(&mut q),
        vec![3, 4, 7, 8, 9],
        "unacked records come back, acked ones do not"
    );
    assert_eq!(q.push(&payload(10)).unwrap(), 10, "ids continue");
}

#[test]
fn acked_segments_are_deleted_and_full_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        max_bytes: 4096,
        segment_bytes: 1024,
    };
    let mut q = Queue::open(dir.path(), opts, Arc::new(Stats::default())).unwrap();
    let big = vec![7u8; 300];
    let mut ids = Vec::new();
    loop {
        match q.push(&big) {
            Ok(id) => ids.push(id),
            Err(PushError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(q.disk_bytes() <= 4096, "{}", q.disk_bytes());
    assert!(segment_files(dir.path()).len() > 2);
    let mut p = Vec::new();
    while q.read_next(&mut p).unwrap().is_some() {}
    for id in &ids {
        q.ack(*id);
    }
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "only the current segment is left"
    );
    assert!(q.push(&big).is_ok(), "room again after acks");
}

#[test]
fn corrupt_record_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = open(dir.path(), 1 << 30);
    for i in 0..5 {
        q.push(&payload(i)).unwrap();
    }
    q.flush().unwrap();
    drop(q);
    // Flip one payload byte of record 2.
    let seg = &segment_files(dir.path())[0];
    let bytes = std::fs::read(seg).unwrap();
    let needle = payload(2);
    let at = memchr::memmem::find(&bytes, &needle).unwrap();
    let mut f = OpenOptions::new().write(true).open(seg).unwrap();
    f.seek(SeekFrom::Start(at as u64 + 3)).unwrap();
    f.write_all(&[bytes[at + 3] ^ 0xff]).unwrap();
    drop(f);

    let mut q = open(dir.path(), 1 << 30);
    assert_eq!(drain(&mut q), vec![0, 1, 3, 4]);
    let st = q.stats().clone();
    assert_eq!(st.corrupt_regions.load(Ordering::Relaxed), 1);
    assert_eq!(st.lost_records.load(Ordering::Relaxed), 1);
    for id in [0, 1, 3, 4] {
        q.ack(id);
    }
    assert_eq!(
        q.ack_watermark(),
        5,
        "the lost record does not hold the watermark back"
    );
}

#[test]
fn torn_tail_after_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = open(dir.path(), 1 << 30);
    for i in 0..4 {
        q.push(&payload(i)).unwrap();
    }
    drop(q);
    let seg = &segment_files(dir.path())[0];
    let len = std::fs::metadata(seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let mut q = open(dir.path(), 1 << 30);
    assert_eq!(q.next_id(), 3, "the torn record's id is reissued");
    q.push(&payload(3)).unwrap();
    assert_eq!(drain(&mut q), vec![0, 1, 2, 3]);
    assert_eq!(
        q.stats().corrupt_regions.load(Ordering::Relaxed),
        1,
        "the torn tail is reported once"
    );
    assert_eq!(q.stats().lost_records.load(Ordering::Relaxed), 0);
}

#[test]
fn garbled_or_missing_ledger_replays_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = open(dir.path(), 1 << 30);
    for i in 0..4 {
        q.push(&payload(i)).unwrap();
    }
    drain(&mut q);
    q.ack(0);
    q.ack(1);
    q.flush().unwrap();
    drop(q);
    std::fs::write(dir.path().join("ledger"), b"LSLEDGER garbage").unwrap();
    let mut q = open(dir.path(), 1 << 30);
    assert_eq!(drain(&mut q), vec![0, 1, 2, 3]);
    assert_eq!(q.stats().ledger_resets.load(Ordering::Relaxed), 1);
    drop(q);
    std::fs::remove_file(dir.path().join("ledger")).unwrap();
    let mut q = open(dir.path(), 1 << 30);
    assert_eq!(drain(&mut q), vec![0, 1, 2, 3]);
}

#[test]
fn write_errors_leave_nothing_partial_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = open(dir.path(), 1 << 30);
    q.push(&payload(0)).unwrap();
    q.inject_write_error(Some(io::ErrorKind::StorageFull));
    let err = q.push(&payload(1)).unwrap_err();
    assert!(matches!(err, PushError::Io { .. }), "{err}");
    assert_eq!(q.stats().write_errors.load(Ordering::Relaxed), 1);
    q.inject_write_error(None);
    assert_eq!(q.push(&payload(1)).unwrap(), 1);
    // A real partial write: a record cut short by a full disk is cut off.
    let len = q.disk_bytes();
    let seg = segment_files(dir.path()).pop().unwrap();
    {
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"LSR1 half a record").unwrap();
    }
    q.writer.set_len(len).unwrap();
    let _ = q.writer.seek(SeekFrom::Start(len + 18));
    q.inject_write_error(Some(io::ErrorKind::StorageFull));
    assert!(q.push(&payload(2)).is_err());
    q.inject_write_error(None);
    assert_eq!(q.push(&payload(2)).unwrap(), 2);
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        q.disk_bytes(),
        "no hole, no leftover"
    );
    drop(q);
    let mut q = open(dir.path(), 1 << 30);
    assert_eq!(drain(&mut q), vec![0, 1, 2]);
    assert_eq!(q.stats().corrupt_regions.load(Ordering::Relaxed), 0);
}

#[test]
fn garbage_files_never_stall_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(segment::file_name(0)), vec![0xAB; 10_000]).unwrap();
    let mut q = open(dir.path(), 1 << 30);
    assert_eq!(drain(&mut q), Vec::<u64>::new());
    q.push(&payload(0)).unwrap();
    assert_eq!(drain(&mut q), vec![0]);
}

#[test]
fn a_directory_has_one_owner_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), 1 << 30);
    let started = std::time::Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let second = Queue::open(&d, Options::new(1 << 30), Arc::new(Stats::default()));
        tx.send(second.is_ok()).unwrap();
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "the second opener waits");
    drop(q);
    assert!(
        rx.recv().unwrap(),
        "and gets the queue once the first is gone"
    );
    assert!(started.elapsed() < LOCK_WAIT);
}

#[test]
fn a_payload_pushed_in_parts_reads_back_whole_and_shorter_after_longer() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = open(dir.path(), 1 << 30);
    let long = payload(6);
    let (a, rest) = long.split_at(5);
    let (b, c) = rest.split_at(7);
    assert_eq!(q.push_parts(&[a, &[], b, c]).unwrap(), 0);
    assert_eq!(q.push(&payload(1)).unwrap(), 1);
    // The reader's buffer keeps its length between records: a shorter
    // record after a longer one must come back exactly.
    let mut p = Vec::new();
    assert_eq!(q.read_next(&mut p).unwrap(), Some(0));
    assert_eq!(p, long);
    assert_eq!(q.read_next(&mut p).unwrap(), Some(1));
    assert_eq!(p, payload(1));
    q.flush().unwrap();
    drop(q);
    let mut q = open(dir.path(), 1 << 30);
    assert_eq!(
        q.read_next(&mut p).unwrap(),
        Some(0),
        "the CRC covers every part"
    );
    assert_eq!(p, long);
    assert_eq!(q.read_next(&mut p).unwrap(), Some(1));
    assert_eq!(p, payload(1));
    assert_eq!(q.read_next(&mut p).unwrap(), None);
}

#[test]
fn reopening_with_a_smaller_max_bytes_keeps_every_record() {
    // disk(64MiB) → disk(1MiB): the queue already holds about 4 MiB.
    let dir = tempfile::tempdir().unwrap();
    let big = |id: u64| {
        let mut p = payload(id);
        p.resize(100 << 10, b'.');
        p
    };
    let mut q = open(dir.path(), 64 << 20);
    for i in 0..40 {
        assert_eq!(q.push(&big(i)).unwrap(), i);
    }
    q.flush().unwrap();
    drop(q);

    let mut q = open(dir.path(), 1 << 20);
    assert!(q.disk_bytes() > 3 << 20, "nothing removed on open");
    assert!(
        matches!(q.push(&big(40)), Err(PushError::Full)),
        "full for new records"
    );
    let mut read = Vec::new();
    let mut p = Vec::new();
    while let Some(id) = q.read_next(&mut p).unwrap() {
        assert_eq!(p, big(id), "payload of record {id}");
        read.push(id);
    }
    assert_eq!(read, (0..40).collect::<Vec<_>>(), "every record is read");
    assert_eq!(q.stats().lost_records.load(Ordering::Relaxed), 0);
    // Segments go once all their records are acked (one 8 MiB segment here).
    for id in 0..40 {
        q.ack(id);
    }
    assert!(q.disk_bytes() <= 1 << 20, "{}", q.disk_bytes());
    assert_eq!(q.push(&big(40)).unwrap(), 40, "room again below max_bytes");
}

#[test]
fn a_drained_queue_removes_its_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("buffer");
    let mut q = open(&dir, 1 << 20);
    for i in 0..3 {
        q.push(&payload(i)).unwrap();
    }
    q.ack(0);
    assert!(q.remove_files().is_err(), "records 1 and 2 are not acked");
    assert!(segment_files(&dir).len() == 1, "nothing removed");
    q.ack(2);
    q.ack(1);
    q.remove_files().unwrap();
    assert!(!dir.exists());
    assert_eq!(q.stats().disk_bytes.load(Ordering::Relaxed), 0);
}
