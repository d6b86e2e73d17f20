//! JSON string escaping for the hot path.
//!
//! Owns turning message bytes into the body of a JSON string. Promises output
//! byte-identical to `serde_json` for valid UTF-8 (`"` and `\` escaped,
//! control characters below 0x20 as `\n` `\t` `\r` `\b` `\f` or `\u00xx`,
//! DEL and non-ASCII passed through), and for invalid UTF-8 the same text as
//! [`String::from_utf8_lossy`] (each invalid sequence becomes U+FFFD) without
//! allocating. Does not validate anything beyond UTF-8.
//!
//! Speed comes from treating the input in blocks of 32 bytes with loops the
//! compiler vectorises: a block of plain bytes (anything but `"`, `\` and
//! controls) is only looked at once and copied later in one run with its
//! plain neighbours; a block that needs escaping is escaped byte by byte
//! through a 256-entry table into a stack buffer and appended at once. The
//! same pass notes whether any byte is non-ASCII; only then is the text
//! validated ([`is_utf8`]; most log lines are ASCII).

/// `ESCAPE[b]` is 0 when `b` is copied as is, otherwise the character that
/// follows the backslash (`u` for `\u00xx`).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The UTF-8 encoding of U+FFFD REPLACEMENT CHARACTER.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

const BLOCK: usize = 32;
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether any of `bytes` needs escaping, and the OR of their high bits.
/// Written so that it vectorises for a full block.
#[inline(always)]
fn classify(bytes: &[u8]) -> (bool, u8) {
    let mut escape = 0u8;
    let mut high = 0u8;
    for &b in bytes {
        escape |= ((b < 0x20) | (b == b'"') | (b == b'\\')) as u8;
        high |= b;
    }
    (escape != 0, high & 0x80)
}

/// Appends up to one block of `bytes`, escaped.
#[inline(always)]
fn escape_block(out: &mut Vec<u8>, bytes: &[u8]) {
    debug_assert!(bytes.len() <= BLOCK);
    let mut buf = [0u8; BLOCK * 6];
    let mut n = 0;
    for &b in bytes {
        match ESCAPE[b as usize] {
            0 => {
                buf[n] = b;
                n += 1;
            }
            b'u' => {
                buf[n..n + 6].copy_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 0xf) as usize],
                ]);
                n += 6;
            }
            c => {
                buf[n] = b'\\';
                buf[n + 1] = c;
                n += 2;
            }
        }
    }
    out.extend_from_slice(&buf[..n]);
}

/// Appends `bytes` escaped (non-ASCII bytes pass through unchecked) and
/// returns whether any byte was non-ASCII.
#[inline]
fn escape_raw(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    out.reserve(bytes.len());
    let mut high = 0;
    let mut run_start = 0;
    let mut i = 0;
    while let Some(block) = bytes.get(i..).and_then(<[u8]>::first_chunk::<BLOCK>) {
        let (escape, h) = classify(block);
        high |= h;
        if escape {
            out.extend_from_slice(&bytes[run_start..i]);
            escape_block(out, block);
            run_start = i + BLOCK;
        }
        i += BLOCK;
    }
    let tail = &bytes[i..];
    let (escape, h) = classify(tail);
    high |= h;
    if escape {
        out.extend_from_slice(&bytes[run_start..i]);
        escape_block(out, tail);
    } else {
        out.extend_from_slice(&bytes[run_start..]);
    }
    high != 0
}

/// Whether `bytes` are valid UTF-8 (the same answer as `std::str::from_utf8`,
/// which is slow on text mixing ASCII with other scripts because it only
/// skips ASCII at word-aligned positions). ASCII is skipped a block or a word
/// at a time from any position; each multi-byte character is checked
/// against the table of well-formed sequences (Unicode 15, table 3-7).
pub fn is_utf8(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        while let Some(block) = bytes.get(i..).and_then(<[u8]>::first_chunk::<BLOCK>) {
            if block.iter().fold(0, |acc, &b| acc | b) >= 0x80 {
                break;
            }
            i += BLOCK;
        }
        while let Some(word) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
            let high = u64::from_le_bytes(*word) & HIGHS;
            if high != 0 {
                i += (high.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        let Some(&lead) = bytes.get(i) else {
            return true;
        };
        if lead < 0x80 {
            i += 1;
            continue;
        }
        let cont = |k: usize| bytes.get(i + k).copied().unwrap_or(0);
        let is_cont = |b: u8| b & 0xc0 == 0x80;
        let len = match lead {
            0xc2..=0xdf if is_cont(cont(1)) => 2,
            0xe0 if matches!(cont(1), 0xa0..=0xbf) && is_cont(cont(2)) => 3,
            0xe1..=0xec | 0xee..=0xef if is_cont(cont(1)) && is_cont(cont(2)) => 3,
            0xed if matches!(cont(1), 0x80..=0x9f) && is_cont(cont(2)) => 3,
            0xf0 if matches!(cont(1), 0x90..=0xbf) && is_cont(cont(2)) && is_cont(cont(3)) => 4,
            0xf1..=0xf3 if is_cont(cont(1)) && is_cont(cont(2)) && is_cont(cont(3)) => 4,
            0xf4 if matches!(cont(1), 0x80..=0x8f) && is_cont(cont(2)) && is_cont(cont(3)) => 4,
            _ => return false,
        };
        i += len;
    }
    true
}

/// Appends `s` escaped for the inside of a JSON string (no quotes added).
#[inline]
pub fn escape_str(out: &mut Vec<u8>, s: &str) {
    escape_raw(out, s.as_bytes());
}

/// Appends `bytes` escaped for the inside of a JSON string (no quotes added),
/// replacing invalid UTF-8 as [`String::from_utf8_lossy`] does. Returns
/// whether anything was replaced.
#[inline]
pub fn escape_bytes_lossy(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    let start = out.len();
    if !escape_raw(out, bytes) || is_utf8(bytes) {
        return false;
    }
    out.truncate(start);
    for chunk in bytes.utf8_chunks() {
        escape_str(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(REPLACEMENT);
        }
    }
    true
}

/// Appends `s` as a complete JSON string, quotes included.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_str(out, s);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        write_json_str(&mut out, s);
        String::from_utf8(out).expect("escaper output is UTF-8")
    }

    #[test]
    fn every_ascii_byte_escapes_like_serde_json() {
        for b in 0u8..=0x7f {
            let s = (b as char).to_string();
            assert_eq!(
                escaped(&s),
                serde_json::to_string(&s).unwrap(),
                "byte {b:#04x}"
            );
        }
    }

    #[test]
    fn escapes_at_every_position_of_a_block() {
        // A special byte at each position of a 32-byte block and an 8-byte
        // word, after plain ASCII and after non-ASCII.
        for len in 0..80 {
            for pos in 0..len {
                for special in ["\"", "\\", "\u{1}", "\u{1f}", "\n", "é", "\u{7f}", " "] {
                    let mut s: String = "aé".repeat(len).chars().take(len).collect();
                    s.insert_str(
                        s.char_indices().nth(pos).map_or(s.len(), |(i, _)| i),
                        special,
                    );
                    assert_eq!(escaped(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn random_strings_escape_like_serde_json() {
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet: Vec<char> = (0u32..0x80)
            .filter_map(char::from_u32)
            .chain(['é', 'ß', '日', '本', '😀', '\u{2028}', '\u{FFFD}'])
            .collect();
        for _ in 0..5000 {
            let len = rng.usize(0..64);
            let s: String = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            assert_eq!(escaped(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn is_utf8_agrees_with_std_on_every_short_sequence() {
        // Every 1- and 2-byte string, and every 3- and 4-byte string whose
        // later bytes are drawn from the bytes where the rules change.
        let edges = [
            0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0,
            0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff,
        ];
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for bytes in [vec![a], vec![a, b], vec![b'x', a, b]] {
                    assert_eq!(
                        is_utf8(&bytes),
                        std::str::from_utf8(&bytes).is_ok(),
                        "{bytes:x?}"
                    );
                }
                for c in edges {
                    for bytes in [
                        vec![a, b, c],
                        vec![a, b, c, 0x80],
                        vec![a, b, c, 0xbf],
                        vec![a, b, c, 0x41],
                    ] {
                        assert_eq!(
                            is_utf8(&bytes),
                            std::str::from_utf8(&bytes).is_ok(),
                            "{bytes:x?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn is_utf8_agrees_with_std() {
        let mut rng = fastrand::Rng::with_seed(13);
        let pieces: [&[u8]; 12] = [
            b"plain ascii words that run past one block of thirty-two bytes",
            b"x",
            "é".as_bytes(),
            "日本".as_bytes(),
            "😀".as_bytes(),
            b"\xff",
            b"\xc3",
            b"\xe6\x97",
            b"\xf0\x9f\x98",
            b"\xed\xa0\x80",
            b"\xc0\xaf",
            b"\xf4\x90\x80\x80",
        ];
        let mut invalid = 0;
        for _ in 0..20_000 {
            let bytes: Vec<u8> = (0..rng.usize(0..10))
                .flat_map(|_| pieces[rng.usize(..pieces.len())].iter().copied())
                .collect();
            let std_says = std::str::from_utf8(&bytes).is_ok();
            assert_eq!(is_utf8(&bytes), std_says, "{bytes:?}");
            invalid += usize::from(!std_says);
        }
        assert!(
            invalid > 1000 && invalid < 19_000,
            "both outcomes exercised: {invalid}"
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_like_from_utf8_lossy() {
        let mut rng = fastrand::Rng::with_seed(11);
        let pieces: [&[u8]; 10] = [
            b"ok",
            b"a plain run of ascii that fills a whole block",
            b"\"",
            b"\xff",
            b"\xc3",
            b"\xe6\x97",
            "日".as_bytes(),
            b"\xf0\x9f\x98",
            b"\n",
            b"\xed\xa0\x80",
        ];
        let mut saw_invalid = false;
        for _ in 0..3000 {
            let bytes: Vec<u8> = (0..rng.usize(0..16))
                .flat_map(|_| pieces[rng.usize(..pieces.len())].iter().copied())
                .collect();
            let mut out = Vec::new();
            let replaced = escape_bytes_lossy(&mut out, &bytes);
            let lossy = String::from_utf8_lossy(&bytes);
            let want = serde_json::to_string(&lossy).unwrap();
            assert_eq!(out, want.as_bytes()[1..want.len() - 1], "{bytes:?}");
            assert_eq!(replaced, std::str::from_utf8(&bytes).is_err(), "{bytes:?}");
            saw_invalid |= replaced;
        }
        assert!(saw_invalid);
    }
}
