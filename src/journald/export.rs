//! The journal export format, as `journalctl --output=export` writes it.
//!
//! ```text
//! __CURSOR=s=…;i=…;b=…;m=…;t=…;x=…\n      text field: NAME=value\n
//! __REALTIME_TIMESTAMP=1700000000000001\n
//! MESSAGE\n<u64 LE length><bytes>\n       binary field: any value journalctl
//! \n                                      will not print as text; one empty line
//!                                         ends the entry
//! ```
//!
//! [`parse_entry`] finds one complete entry at the start of a buffer and
//! returns its fields as byte ranges into that buffer (nothing is copied);
//! an entry not yet complete is `Ok(None)`: read more and call again.
//! Values are bytes: binary fields may hold anything, including invalid
//! UTF-8 and newlines. A field may appear more than once in an entry.

use std::ops::Range;

/// An entry larger than this is refused (journald itself keeps entries far
/// smaller; a field over it is rather a stream that is not export format).
pub const MAX_ENTRY_BYTES: usize = 64 << 20;

/// One field of an entry: byte ranges of its name and value in the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRange {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    #[error("journal entry over {MAX_ENTRY_BYTES} bytes")]
    TooLarge,
    #[error("not journal export format at byte {at}: {what}")]
    Malformed { at: usize, what: &'static str },
}

/// Parses the entry at the start of `buf`: its fields go to `fields`
/// (cleared first) and the bytes it takes, including the empty line that
/// ends it, are returned. `Ok(None)`: the entry is not complete in `buf`.
pub fn parse_entry(buf: &[u8], fields: &mut Vec<FieldRange>) -> Result<Option<usize>, ExportError> {
    fields.clear();
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        let Some(stop) = memchr::memchr2(b'=', b'\n', rest) else {
            return incomplete(buf);
        };
        if stop == 0 && rest[0] == b'\n' {
            if fields.is_empty() {
                // Blank lines between entries are tolerated.
                pos += 1;
                fields.clear();
                if pos >= buf.len() {
                    return Ok(Some(pos));
                }
                continue;
            }
            return Ok(Some(pos + 1));
        }
        if stop == 0 {
            return Err(ExportError::Malformed {
                at: pos,
                what: "field without a name",
            });
        }
        let name = pos..pos + stop;
        if rest[stop] == b'=' {
            let value_start = pos + stop + 1;
            let Some(end) = memchr::memchr(b'\n', &buf[value_start..]) else {
                return incomplete(buf);
            };
            fields.push(FieldRange {
                name,
                value: value_start..value_start + end,
            });
            pos = value_start + end + 1;
        } else {
            let len_at = pos + stop + 1;
            let Some(len_bytes) = buf.get(len_at..len_at + 8) else {
                return incomplete(buf);
            };
            let mut le = [0u8; 8];
            le.copy_from_slice(len_bytes);
            let len = usize::try_from(u64::from_le_bytes(le)).unwrap_or(usize::MAX);
            if len > MAX_ENTRY_BYTES {
                return Err(ExportError::TooLarge);
            }
            let value_start = len_at + 8;
            let value_end = value_start + len;
            match buf.get(value_end) {
                None => return incomplete(buf),
                Some(b'\n') => {}
                Some(_) => {
                    return Err(ExportError::Malformed {
                        at: value_end,
                        what: "binary field not followed by a newline",
                    });
                }
            }
            fields.push(FieldRange {
                name,
                value: value_start..value_end,
            });
            pos = value_end + 1;
        }
    }
}

fn incomplete(buf: &[u8]) -> Result<Option<usize>, ExportError> {
    if buf.len() > MAX_ENTRY_BYTES {
        Err(ExportError::TooLarge)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(buf: &[u8]) -> (usize, Vec<(String, Vec<u8>)>) {
        let mut f = Vec::new();
        let used = parse_entry(buf, &mut f).unwrap().expect("complete");
        let named = f
            .iter()
            .map(|r| {
                (
                    String::from_utf8(buf[r.name.clone()].to_vec()).unwrap(),
                    buf[r.value.clone()].to_vec(),
                )
            })
            .collect();
        (used, named)
    }

    #[test]
    fn text_and_binary_fields_and_the_entry_end() {
        let mut buf = b"__CURSOR=s=1;i=2\nMESSAGE\n".to_vec();
        buf.extend_from_slice(&7u64.to_le_bytes());
        buf.extend_from_slice(b"a\xff\0b\nc=\n");
        buf.extend_from_slice(b"EMPTY=\n\nNEXT=1\n\n");
        let (used, fields) = fields_of(&buf);
        assert_eq!(&buf[used..], b"NEXT=1\n\n");
        assert_eq!(
            fields,
            [
                ("__CURSOR".into(), b"s=1;i=2".to_vec()),
                ("MESSAGE".into(), b"a\xff\0b\nc=".to_vec()),
                ("EMPTY".into(), Vec::new()),
            ]
        );
    }

    #[test]
    fn every_prefix_of_an_entry_is_incomplete() {
        let mut buf = b"A=1\nBIN\n".to_vec();
        buf.extend_from_slice(&3u64.to_le_bytes());
        buf.extend_from_slice(b"x\ny\nB=2\n\n");
        let mut f = Vec::new();
        for cut in 0..buf.len() {
            assert_eq!(parse_entry(&buf[..cut], &mut f), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_entry(&buf, &mut f), Ok(Some(buf.len())));
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn garbage_is_an_error_not_a_hang() {
        let mut f = Vec::new();
        assert!(matches!(
            parse_entry(b"=x\n\n", &mut f),
            Err(ExportError::Malformed { .. })
        ));
        let mut buf = b"BIN\n".to_vec();
        buf.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse_entry(&buf, &mut f), Err(ExportError::TooLarge));
        let mut buf = b"BIN\n".to_vec();
        buf.extend_from_slice(&1u64.to_le_bytes());
        buf.extend_from_slice(b"xy\n");
        assert!(matches!(
            parse_entry(&buf, &mut f),
            Err(ExportError::Malformed { .. })
        ));
    }
}
