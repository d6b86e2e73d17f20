//! Dissect patterns: `%{client} - - [%{ts}] "%{method} %{path}"`.
//!
//! A pattern is literal text and keys. Matching walks the input once: the
//! text before the first key must be there; each key takes the bytes up to
//! the next occurrence of the literal that follows it (the last key, with
//! nothing after it, takes the rest). `%{}` and `%{?name}` match without
//! keeping the value; `%{name->}` also skips repeats of the literal after
//! it (padding). No regex, no backtracking: a line either splits this way
//! or the pattern fails on it. Two keys with nothing between them are a
//! config error (where would the first end?).

use memchr::memmem;

#[derive(Debug)]
struct Part {
    /// Literal text after the key (empty only for the last key).
    delimiter: Box<[u8]>,
    finder: memmem::Finder<'static>,
    /// `None`: skipped (`%{}`, `%{?name}`).
    key: Option<String>,
    /// `->`: repeats of `delimiter` after the value are skipped too.
    padded: bool,
}

#[derive(Debug)]
pub struct Dissect {
    prefix: Box<[u8]>,
    parts: Box<[Part]>,
}

impl Dissect {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn new(pattern: &str) -> Result<Dissect, String> {
        let (prefix, mut rest) = match pattern.find("%{") {
            Some(i) => (&pattern[..i], &pattern[i..]),
            None => return Err("has no %{key}".to_owned()),
        };
        let mut parts = Vec::new();
        while let Some(body) = rest.strip_prefix("%{") {
            let close = body
                .find('}')
                .ok_or_else(|| format!("unterminated %{{ at {:?}", truncate(rest)))?;
            let mut key = &body[..close];
            let padded = key.ends_with("->");
            if padded {
                key = &key[..key.len() - 2];
            }
            let after = &body[close + 1..];
            let next = after.find("%{").unwrap_or(after.len());
            let delimiter = &after[..next];
            rest = &after[next..];
            if delimiter.is_empty() && !rest.is_empty() {
                return Err(format!(
                    "%{{{key}}} is followed directly by another key: put literal text between them"
                ));
            }
            let key = if key.is_empty() || key.starts_with('?') {
                None
            } else {
                if key.contains(['%', '{', '}', '+', '&', '*']) {
                    return Err(format!(
                        "key {key:?}: only names, `?name` and `name->` are supported"
                    ));
                }
                Some(key.to_owned())
            };
            parts.push(Part {
                finder: memmem::Finder::new(delimiter.as_bytes()).into_owned(),
                delimiter: delimiter.as_bytes().into(),
                key,
                padded,
            });
        }
        if !parts.iter().any(|p| p.key.is_some()) {
            return Err("keeps no value (every key is skipped)".to_owned());
        }
        Ok(Dissect {
            prefix: prefix.as_bytes().into(),
            parts: parts.into_boxed_slice(),
        })
    }

    /// The names of the kept keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| p.key.as_deref())
    }

    /// Splits `input`: pushes `(start, end)` of each kept key's value, in
    /// the order of [`Dissect::keys`], onto `out`. `false` (and `out` as it
    /// was) if the input does not have the pattern's shape.
    pub fn split(&self, input: &[u8], out: &mut Vec<(u32, u32)>) -> bool {
        let before = out.len();
        let ok = self.split_inner(input, out);
        if !ok {
            out.truncate(before);
        }
        ok
    }

    fn split_inner(&self, input: &[u8], out: &mut Vec<(u32, u32)>) -> bool {
        if !input.starts_with(&self.prefix) || u32::try_from(input.len()).is_err() {
            return false;
        }
        let mut at = self.prefix.len();
        for part in self.parts.iter() {
            let (end, next) = if part.delimiter.is_empty() {
                (input.len(), input.len())
            } else {
                match part.finder.find(&input[at..]) {
                    Some(i) => (at + i, at + i + part.delimiter.len()),
                    None => return false,
                }
            };
            if part.key.is_some() {
                out.push((at as u32, end as u32));
            }
            at = next;
            if part.padded && !part.delimiter.is_empty() {
                while input[at..].starts_with(&part.delimiter) {
                    at += part.delimiter.len();
                }
            }
        }
        true
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(20) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split<'a>(d: &Dissect, input: &'a str) -> Option<Vec<&'a str>> {
        let mut out = Vec::new();
        d.split(input.as_bytes(), &mut out).then(|| {
            out.iter()
                .map(|&(s, e)| &input[s as usize..e as usize])
                .collect()
        })
    }

    #[test]
    fn nginx_access_line_splits_into_its_keys() {
        let d = Dissect::new(
            r#"%{client} - - [%{ts}] "%{method} %{path} %{?proto}" %{status} %{bytes}"#,
        )
        .unwrap();
        assert_eq!(
            d.keys().collect::<Vec<_>>(),
            ["client", "ts", "method", "path", "status", "bytes"]
        );
        let line = r#"10.0.0.1 - - [26/Nov/2026:01:02:03 +0000] "GET /api/v1 HTTP/1.1" 200 512"#;
        assert_eq!(
            split(&d, line).unwrap(),
            [
                "10.0.0.1",
                "26/Nov/2026:01:02:03 +0000",
                "GET",
                "/api/v1",
                "200",
                "512"
            ]
        );
    }

    #[test]
    fn a_line_of_another_shape_fails_and_leaves_nothing() {
        let d = Dissect::new("[%{level}] %{msg}").unwrap();
        let mut out = vec![(9, 9)];
        assert!(!d.split(b"level=info msg", &mut out));
        assert_eq!(out, [(9, 9)]);
        assert!(!Dissect::new("%{a}=%{b};").unwrap().split(b"a=b", &mut out));
        assert_eq!(split(&d, "[warn] "), Some(vec!["warn", ""]));
    }

    #[test]
    fn padding_skips_repeated_delimiters() {
        let d = Dissect::new("%{a->} %{b}").unwrap();
        assert_eq!(split(&d, "x     y z").unwrap(), ["x", "y z"]);
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(Dissect::new("no keys").unwrap_err().contains("no %{key}"));
        assert!(Dissect::new("%{a}%{b}").unwrap_err().contains("directly"));
        assert!(Dissect::new("%{a").unwrap_err().contains("unterminated"));
        assert!(
            Dissect::new("%{?a} %{}")
                .unwrap_err()
                .contains("keeps no value")
        );
        assert!(
            Dissect::new("%{+a} %{b}")
                .unwrap_err()
                .contains("supported")
        );
    }
}
