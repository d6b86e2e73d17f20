//! JSON string escaping for the hot path.
//!
//! Owns turning message bytes into the body of a JSON string. Promises output
//! byte-identical to `serde_json` for valid UTF-8 (`"` and `\` escaped,
//! control characters below 0x20 as `\n` `\t` `\r` `\b` `\f` or `\u00xx`,
//! DEL and non-ASCII passed through), and for invalid UTF-8 the same text as
//! [`String::from_utf8_lossy`] (each invalid sequence becomes U+FFFD) without
//! allocating. Does not validate anything beyond UTF-8.
//!
//! Speed comes from scanning eight bytes at a time (SWAR: a few integer
//! operations find whether a word holds a byte that needs escaping and where
//! the first one is) and copying the runs between escapes in bulk; a
//! 256-entry table says how each byte is escaped.

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

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// A mask whose lowest set bit is bit 7 of the first byte (in little-endian
/// order) of `word` that needs escaping; 0 when none does. Bits above the
/// lowest may be false positives (borrows), which is why only the lowest is
/// used.
#[inline(always)]
fn escape_mask(word: u64) -> u64 {
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * b'"' as u64);
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = word ^ (ONES * b'\\' as u64);
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & HIGHS
}

/// Index of the first byte at or after `from` that needs escaping.
#[inline(always)]
fn find_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(chunk) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let mask = escape_mask(u64::from_le_bytes(*chunk));
        if mask != 0 {
            return Some(i + (mask.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    bytes
        .get(i..)?
        .iter()
        .position(|&b| ESCAPE[b as usize] != 0)
        .map(|p| i + p)
}

#[inline]
fn push_escape(out: &mut Vec<u8>, byte: u8) {
    match ESCAPE[byte as usize] {
        b'u' => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(byte >> 4) as usize],
            HEX[(byte & 0xf) as usize],
        ]),
        c => out.extend_from_slice(&[b'\\', c]),
    }
}

/// Appends `s` escaped for the inside of a JSON string (no quotes added).
#[inline]
pub fn escape_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len());
    let mut run_start = 0;
    while let Some(pos) = find_escape(bytes, run_start) {
        out.extend_from_slice(&bytes[run_start..pos]);
        push_escape(out, bytes[pos]);
        run_start = pos + 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
}

/// Appends `bytes` escaped for the inside of a JSON string (no quotes added),
/// replacing invalid UTF-8 as [`String::from_utf8_lossy`] does. Returns
/// whether anything was replaced.
#[inline]
pub fn escape_bytes_lossy(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    if let Ok(s) = std::str::from_utf8(bytes) {
        escape_str(out, s);
        return false;
    }
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
    fn escapes_at_every_position_of_the_word_scan() {
        // An escape at each position of an 8-byte word, before and after
        // non-ASCII bytes (whose high bit must not fool the scan).
        for len in 0..40 {
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
    fn invalid_utf8_is_replaced_like_from_utf8_lossy() {
        let mut rng = fastrand::Rng::with_seed(11);
        let pieces: [&[u8]; 9] = [
            b"ok",
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
            let bytes: Vec<u8> = (0..rng.usize(0..12))
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
