//! `${VAR}` interpolation on the raw text of a config file, before YAML
//! parsing.
//!
//! Syntax (a subset of the POSIX shell's):
//! - `${NAME}`: the value of environment variable `NAME`; an error if unset.
//!   A variable that is set but empty expands to nothing.
//! - `${NAME:-default}`: the value of `NAME`, or `default` if `NAME` is unset
//!   or empty. The default is literal text up to the first `}` (no nesting).
//! - `$$`: a literal `$`.
//! - A `$` followed by anything else is kept as it is.
//!
//! `NAME` is `[A-Za-z_][A-Za-z0-9_]*`. Whole-line comments (the first
//! non-blank character is `#`) are copied untouched, so a commented-out
//! `${VAR}` never fails. Values are inserted verbatim (quote the placeholder
//! in YAML if a value may contain `:` or `#`); a value containing a line
//! break is refused, which also keeps every line number of the output equal
//! to the input's, so later errors point at the line the user wrote.

/// Why a placeholder could not be expanded. `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    #[error(
        "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
    )]
    Unset { name: String, line: usize },
    #[error(
        "environment variable {name} contains a line break, which is not allowed in a config value"
    )]
    LineBreak { name: String, line: usize },
    #[error("unterminated placeholder {text:?}: expected `}}` (write $$ for a literal $)")]
    Unterminated { text: String, line: usize },
    #[error(
        "invalid variable name {name:?} in placeholder (expected letters, digits and _; write $$ for a literal $)"
    )]
    BadName { name: String, line: usize },
}

impl InterpolationError {
    pub fn line(&self) -> usize {
        match self {
            Self::Unset { line, .. }
            | Self::LineBreak { line, .. }
            | Self::Unterminated { line, .. }
            | Self::BadName { line, .. } => *line,
        }
    }
}

/// Expands placeholders in `text`, looking variables up with `env`
/// (`|name| std::env::var(name).ok()` in production).
pub fn interpolate(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') || !line.contains('$') {
            out.push_str(line);
        } else {
            expand_line(line, index + 1, &env, &mut out)?;
        }
    }
    Ok(out)
}

fn expand_line(
    line: &str,
    line_no: usize,
    env: &impl Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), InterpolationError> {
    let mut rest = line;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                return Err(InterpolationError::Unterminated {
                    text: rest[dollar..].trim_end().to_owned(),
                    line: line_no,
                });
            };
            let inner = &body[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_valid_name(name) {
                return Err(InterpolationError::BadName {
                    name: name.to_owned(),
                    line: line_no,
                });
            }
            let value = match (env(name), default) {
                (Some(value), Some(default)) if value.is_empty() => default.to_owned(),
                (Some(value), _) => value,
                (None, Some(default)) => default.to_owned(),
                (None, None) => {
                    return Err(InterpolationError::Unset {
                        name: name.to_owned(),
                        line: line_no,
                    });
                }
            };
            if value.contains(['\n', '\r']) {
                return Err(InterpolationError::LineBreak {
                    name: name.to_owned(),
                    line: line_no,
                });
            }
            out.push_str(&value);
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(())
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "NODE" => Some("node-1".into()),
            "EMPTY" => Some(String::new()),
            "MULTI" => Some("a\nb".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        let text = "a: ${NODE}\nb: ${UNSET:-fallback}\nc: ${NODE:-unused}\nd: ${EMPTY:-dflt}\ne: '${EMPTY}'\n";
        let out = interpolate(text, env).unwrap();
        assert_eq!(out, "a: node-1\nb: fallback\nc: node-1\nd: dflt\ne: ''\n");
    }

    #[test]
    fn dollar_escapes_and_lone_dollars() {
        let out = interpolate("a: $$HOME costs $5 ${NODE}$$\n", env).unwrap();
        assert_eq!(out, "a: $HOME costs $5 node-1$\n");
        // `$${X}` is a literal `${X}`, not a placeholder.
        assert_eq!(interpolate("a: $${UNSET}", env).unwrap(), "a: ${UNSET}");
    }

    #[test]
    fn unset_variable_names_variable_and_line() {
        let err = interpolate("a: 1\n\nb: x${MISSING}y\n", env).unwrap_err();
        assert_eq!(
            err,
            InterpolationError::Unset {
                name: "MISSING".into(),
                line: 3
            }
        );
        assert!(err.to_string().contains("MISSING"), "{err}");
    }

    #[test]
    fn whole_line_comments_are_untouched() {
        let text = "  # node_name: ${MISSING}\na: 1 # ${NODE}\n";
        // Trailing comments are expanded (only whole-line comments are skipped).
        assert_eq!(
            interpolate(text, env).unwrap(),
            "  # node_name: ${MISSING}\na: 1 # node-1\n"
        );
    }

    #[test]
    fn malformed_placeholders_are_errors() {
        assert!(matches!(
            interpolate("a: 1\nb: ${NODE\n", env),
            Err(InterpolationError::Unterminated { line: 2, .. })
        ));
        assert!(matches!(
            interpolate("b: ${1X}", env),
            Err(InterpolationError::BadName { line: 1, .. })
        ));
        assert!(matches!(
            interpolate("b: ${}", env),
            Err(InterpolationError::BadName { line: 1, .. })
        ));
    }

    #[test]
    fn values_with_line_breaks_are_refused() {
        assert!(matches!(
            interpolate("a: ${MULTI}", env),
            Err(InterpolationError::LineBreak { line: 1, .. })
        ));
    }
}
