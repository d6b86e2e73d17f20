//! gzip of a bulk body: Intel ISA-L's igzip for levels 1–3, zlib-rs above.
//!
//! gzip level 1 was ~60 % of the agent's CPU in a catch-up (docs/
//! performance.md, "gzip"). On the realistic corpus's NDJSON, igzip level 1
//! compresses ~2x faster than zlib-rs level 1 (zlib-ng's `deflate_quick`)
//! and its output is ~25 % smaller (it builds Huffman tables per block where
//! `deflate_quick` uses the static ones). igzip has levels 0–3 only, so
//! `compression: {gzip: N}` maps 1–3 to igzip 1–3 and 4–9 to zlib-rs, whose
//! higher levels trade speed for a smaller body.
//!
//! ISA-L is C and assembly, built from source and linked statically by the
//! `isal-sys` crate (build needs nasm, autoconf, automake, libtool, make:
//! `scripts/packages.sh build`). Building without the default `isal` feature
//! uses zlib-rs for every level.
//!
//! A compressor's state (an 80 KiB stream and a level buffer of ~300 KiB)
//! is made once and kept in a small pool: making one per request cost page
//! faults and a memset of its tables for every batch.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

/// True if `level` compresses with igzip (~550 MiB/s of NDJSON per core
/// at level 1): one batch compressing at a time keeps up with what two
/// cores of tailers produce. zlib-rs levels are several times slower.
pub fn is_fast(level: u32) -> bool {
    // 3: `isal::MAX_LEVEL` (that module exists only with the feature).
    cfg!(feature = "isal") && (1..=3).contains(&level)
}

/// Compresses `slices` (in order, as one stream) into one gzip member at
/// `level` (1–9). `raw_len` is their total length (to size the output).
pub fn gzip<'a>(
    slices: impl Iterator<Item = &'a [u8]>,
    raw_len: usize,
    level: u32,
) -> std::io::Result<Vec<u8>> {
    // Logs compress 3–5x at level 1; start at a third: a harder body
    // regrows once.
    let out = Vec::with_capacity(raw_len / 3 + 64);
    #[cfg(feature = "isal")]
    if (1..=isal::MAX_LEVEL).contains(&level) {
        return isal::gzip(slices, level, out);
    }
    let mut encoder = GzEncoder::new(out, Compression::new(level.min(9)));
    for slice in slices {
        encoder.write_all(slice)?;
    }
    encoder.finish()
}

/// Frees the pooled compressors if none was taken since the last call (an
/// idle agent keeps no ~0.4 MiB compressor per past request); called with
/// the periodic heap trim.
pub fn release_if_unused() {
    #[cfg(feature = "isal")]
    isal::release_if_unused();
}

#[cfg(feature = "isal")]
mod isal {
    use isal_sys::igzip_lib as ffi;

    use crate::pool::Pool;

    /// igzip's highest level.
    pub const MAX_LEVEL: u32 = 3;
    /// Compressors kept for reuse (one per request compressing at once;
    /// `concurrency` is small).
    const POOL_MAX: usize = 4;
    /// Largest piece of input given to one `isal_deflate` call (its
    /// lengths are `u32`).
    const MAX_CHUNK: usize = 1 << 30;

    static POOL: Pool<Compressor> = Pool::new(POOL_MAX);

    pub fn release_if_unused() {
        POOL.release_if_unused();
    }

    /// One igzip stream and its level buffer. The stream is boxed: it is
    /// large, and it must not move while `isal_deflate` holds pointers
    /// into it (it does not across calls; the box keeps it simple).
    struct Compressor {
        stream: Box<ffi::isal_zstream>,
        level_buf: Vec<u8>,
    }

    // SAFETY: the raw pointers in the stream point into the compressor's
    // own buffers, or into input/output buffers only during one `gzip`
    // call; nothing is shared between threads.
    unsafe impl Send for Compressor {}

    impl Compressor {
        fn new() -> Self {
            // SAFETY: isal_zstream is plain C data (integers, pointers,
            // arrays) for which all-zero is a valid value, and
            // isal_deflate_init initialises it.
            let mut stream: Box<ffi::isal_zstream> = Box::new(unsafe { std::mem::zeroed() });
            unsafe { ffi::isal_deflate_init(&mut *stream) };
            Compressor {
                stream,
                level_buf: Vec::new(),
            }
        }
    }

    fn level_buf_size(level: u32) -> usize {
        (match level {
            0 => ffi::ISAL_DEF_LVL0_DEFAULT,
            1 => ffi::ISAL_DEF_LVL1_DEFAULT,
            2 => ffi::ISAL_DEF_LVL2_DEFAULT,
            _ => ffi::ISAL_DEF_LVL3_DEFAULT,
        }) as usize
    }

    pub fn gzip<'a>(
        slices: impl Iterator<Item = &'a [u8]>,
        level: u32,
        mut out: Vec<u8>,
    ) -> std::io::Result<Vec<u8>> {
        let mut compressor = POOL.take().unwrap_or_else(Compressor::new);
        let result = compress(&mut compressor, slices, level, &mut out);
        if result.is_ok() {
            POOL.give(compressor);
        }
        result.map(|()| out)
    }

    fn compress<'a>(
        c: &mut Compressor,
        slices: impl Iterator<Item = &'a [u8]>,
        level: u32,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let size = level_buf_size(level);
        if c.level_buf.len() < size {
            c.level_buf = vec![0; size];
        }
        let stream = &mut *c.stream;
        // SAFETY: the stream was initialised by isal_deflate_init; reset
        // keeps its settings, which are all set again below.
        unsafe { ffi::isal_deflate_reset(stream) };
        stream.level = level;
        stream.level_buf = c.level_buf.as_mut_ptr();
        stream.level_buf_size = c.level_buf.len() as u32;
        stream.gzip_flag = ffi::IGZIP_GZIP as u16;
        stream.flush = ffi::NO_FLUSH as u16;
        stream.hist_bits = 0;
        // `hufftables` keeps the defaults isal_deflate_init set.
        stream.end_of_stream = 0;
        let mut slices = slices.flat_map(|s| s.chunks(MAX_CHUNK)).peekable();
        loop {
            let input: &[u8] = slices.next().unwrap_or(&[]);
            stream.end_of_stream = u16::from(slices.peek().is_none());
            stream.next_in = input.as_ptr().cast_mut();
            stream.avail_in = input.len() as u32;
            loop {
                if out.capacity() - out.len() < 4096 {
                    out.reserve(out.capacity().max(64 << 10));
                }
                let spare = (out.capacity() - out.len()).min(u32::MAX as usize);
                // SAFETY: next_in/avail_in describe `input`, alive for this
                // call; next_out/avail_out the spare capacity of `out`.
                // isal_deflate reads the input (never writes it, despite
                // the `*mut`) and writes at most avail_out bytes.
                let status = unsafe {
                    stream.next_out = out.as_mut_ptr().add(out.len());
                    stream.avail_out = spare as u32;
                    ffi::isal_deflate(stream)
                };
                if status != ffi::COMP_OK as i32 {
                    return Err(std::io::Error::other(format!(
                        "igzip failed (status {status})"
                    )));
                }
                let written = spare - stream.avail_out as usize;
                // SAFETY: isal_deflate initialised `written` bytes past len.
                unsafe { out.set_len(out.len() + written) };
                let done = if stream.end_of_stream != 0 {
                    stream.internal_state.state == ffi::isal_zstate_state_ZSTATE_END
                } else {
                    stream.avail_in == 0
                };
                if done {
                    break;
                }
            }
            if stream.end_of_stream != 0 {
                // Clear the pointers into buffers that die with this call.
                stream.next_in = std::ptr::null_mut();
                stream.next_out = std::ptr::null_mut();
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::gzip;

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut decoder = flate2::read::GzDecoder::new(gz);
        let mut out = Vec::new();
        decoder.read_to_end(&mut out).expect("valid gzip");
        // One member, nothing after it.
        assert!(
            decoder.into_inner().is_empty(),
            "trailing bytes after the gzip member"
        );
        out
    }

    fn ndjson(lines: usize, rng: &mut fastrand::Rng) -> Vec<u8> {
        let mut body = Vec::new();
        for i in 0..lines {
            let words: Vec<String> = (0..rng.usize(1..40))
                .map(|_| format!("w{}", rng.u32(0..500)))
                .collect();
            body.extend_from_slice(
                format!(
                    "{{\"create\":{{\"_index\":\"logs\",\"_id\":\"{i}\"}}}}\n{{\"message\":\"{}\"}}\n",
                    words.join(" ")
                )
                .as_bytes(),
            );
        }
        body
    }

    /// Splits `body` into slices of random lengths (as a batch's spans).
    fn cut<'a>(body: &'a [u8], rng: &mut fastrand::Rng) -> Vec<&'a [u8]> {
        let mut slices = Vec::new();
        let mut at = 0;
        while at < body.len() {
            let len = rng.usize(1..=(body.len() - at).min(200_000));
            slices.push(&body[at..at + len]);
            at += len;
        }
        slices
    }

    #[test]
    fn every_level_round_trips_any_slicing() {
        let seed = fastrand::u64(..);
        println!("seed {seed}");
        let mut rng = fastrand::Rng::with_seed(seed);
        let text = ndjson(20_000, &mut rng);
        let mut random = vec![0u8; 3 << 20];
        rng.fill(&mut random);
        let bodies: [&[u8]; 4] = [&text, &random, b"", b"{\"a\":1}\n"];
        // Twice per level: the second run reuses a pooled compressor.
        for level in [1, 2, 3, 1, 6, 9, 0, 3, 1] {
            for body in bodies {
                let slices = cut(body, &mut rng);
                let gz = gzip(slices.iter().copied(), body.len(), level).expect("gzip");
                assert_eq!(gunzip(&gz), body, "level {level}, {} bytes", body.len());
                if level > 0 && body.len() > 100_000 && body == &text[..] {
                    assert!(
                        gz.len() * 3 < body.len(),
                        "level {level}: {} bytes",
                        gz.len()
                    );
                }
            }
        }
    }

    #[test]
    fn concurrent_bodies_do_not_mix() {
        let handles: Vec<_> = (0..6u64)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(t);
                    for _ in 0..10 {
                        let body = ndjson(rng.usize(1..3_000), &mut rng);
                        let slices = cut(&body, &mut rng);
                        let gz = gzip(slices.iter().copied(), body.len(), 1).expect("gzip");
                        assert_eq!(gunzip(&gz), body);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("no panic");
        }
    }
}
