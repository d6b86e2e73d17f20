//! Where each key of a YAML document is: a map from key path
//! (`sink.elasticsearch.hosts`, `sources[0].include[1]`) to its 1-based line.
//!
//! Built by walking the marked events of `yaml-rust2`'s parser, only to put a
//! line number on validation errors (serde knows nothing of lines once a value
//! is deserialised). Best effort: if the text does not parse, the map holds
//! what was seen before the syntax error, and serde reports the error itself.
//! Complex (non-scalar) mapping keys get the path segment `?`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Key path → line of the key (for a mapping entry) or of the item (for a
/// sequence entry).
#[derive(Debug, Default)]
pub struct KeyPositions {
    lines: HashMap<String, usize>,
    /// Every recorded (line, path), in document order, for lookups by line.
    in_order: Vec<(usize, String)>,
}

impl KeyPositions {
    /// Indexes the first document of `text`.
    pub fn index(text: &str) -> Self {
        let mut walker = Walker::default();
        // A syntax error only ends the walk early; serde reports it.
        let _ = Parser::new_from_str(text).load(&mut walker, false);
        walker.positions
    }

    /// The line of `path`, or of its nearest ancestor present in the file
    /// (a key that was left out is reported at its parent).
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            path = parent(path)?;
        }
    }

    /// The line of the last occurrence of `path` (for keys given twice).
    pub fn last_line_of(&self, path: &str) -> Option<usize> {
        self.in_order
            .iter()
            .rev()
            .find(|(_, p)| p == path)
            .map(|(l, _)| *l)
    }

    /// The innermost key or item that starts on `line`, if any.
    pub fn path_at_line(&self, line: usize) -> Option<&str> {
        self.in_order
            .iter()
            .rev()
            .find(|(l, _)| *l == line)
            .map(|(_, p)| p.as_str())
    }

    fn record(&mut self, path: String, line: usize) {
        self.in_order.push((line, path.clone()));
        self.lines.entry(path).or_insert(line);
    }
}

/// `a.b[2]` → `a.b`; `a.b` → `a`; `a` → None.
pub fn parent(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

/// Joins a parent path and a mapping key.
pub fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    positions: KeyPositions,
}

impl Walker {
    /// A node starts at `line`: returns its path, recording keys and items.
    /// `None` means the node is itself a mapping key.
    fn node_path(&mut self, line: usize, scalar_key: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let item = format!("{path}[{next}]");
                *next += 1;
                self.positions.record(item.clone(), line);
                Some(item)
            }
            Some(Frame::Map {
                path,
                key: key @ None,
            }) => {
                let name = scalar_key.unwrap_or("?").to_owned();
                let full = join_key(path, &name);
                *key = Some(name);
                self.positions.record(full, line);
                None
            }
            Some(Frame::Map {
                path,
                key: Some(key),
            }) => Some(join_key(path, key)),
        }
    }

    /// The node that was the value of the current mapping entry is complete.
    fn value_done(&mut self) {
        if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
            *key = None;
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::Scalar(value, ..) => {
                if self.node_path(line, Some(&value)).is_some() {
                    self.value_done();
                }
            }
            Event::Alias(_) => {
                if self.node_path(line, None).is_some() {
                    self.value_done();
                }
            }
            Event::MappingStart(..) => {
                let path = self.node_path(line, None).unwrap_or_else(|| "?".to_owned());
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.node_path(line, None).unwrap_or_else(|| "?".to_owned());
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
node_name: n1
log: {format: json, level: info}
sources:
  - name: containers
    include:
      - /var/log/containers/*.log
      - /var/log/other/*.log
    exclude: []
  - name: plain
    include: [\"/var/log/*.log\"]
sink:
  elasticsearch:
    hosts: [\"http://127.0.0.1:9200\"]
    batch:
      max_bytes: 5MiB
";

    #[test]
    fn maps_key_paths_to_lines() {
        let p = KeyPositions::index(DOC);
        assert_eq!(p.line_of("node_name"), Some(1));
        assert_eq!(p.line_of("log.level"), Some(2));
        assert_eq!(p.line_of("sources"), Some(3));
        assert_eq!(p.line_of("sources[0]"), Some(4));
        assert_eq!(p.line_of("sources[0].name"), Some(4));
        assert_eq!(p.line_of("sources[0].include"), Some(5));
        assert_eq!(p.line_of("sources[0].include[1]"), Some(7));
        assert_eq!(p.line_of("sources[0].exclude"), Some(8));
        assert_eq!(p.line_of("sources[1].name"), Some(9));
        assert_eq!(p.line_of("sources[1].include[0]"), Some(10));
        assert_eq!(p.line_of("sink.elasticsearch"), Some(12));
        assert_eq!(p.line_of("sink.elasticsearch.batch.max_bytes"), Some(15));
    }

    #[test]
    fn absent_keys_fall_back_to_their_parent() {
        let p = KeyPositions::index(DOC);
        assert_eq!(p.line_of("sink.elasticsearch.index"), Some(12));
        assert_eq!(p.line_of("sources[1].read_from"), Some(9));
        assert_eq!(p.line_of("shutdown_timeout"), None);
    }

    #[test]
    fn finds_the_innermost_path_on_a_line() {
        let p = KeyPositions::index(DOC);
        assert_eq!(p.path_at_line(10), Some("sources[1].include[0]"));
        assert_eq!(p.path_at_line(1), Some("node_name"));
        assert_eq!(p.path_at_line(99), None);
    }

    #[test]
    fn syntax_errors_keep_what_was_seen() {
        let p = KeyPositions::index("a: 1\nb: [\n");
        assert_eq!(p.line_of("a"), Some(1));
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent("a.b[2]"), Some("a.b"));
        assert_eq!(parent("a.b"), Some("a"));
        assert_eq!(parent("a"), None);
    }
}
