//! The `processors:` lists as written in the config file.
//!
//! One type serves as the raw model (serde, `deny_unknown_fields`) and as
//! the value [`crate::config::Config`] keeps and prints back (`check-config`
//! writes YAML that loads to the same config): regexes, patterns and paths
//! stay text here. [`super::Chain::compile`] is the validation: it turns a
//! list into the compiled chain the followers run, or an error naming the
//! key. Every step is a one-key mapping (`- drop: {when: …}`); an unknown
//! key is an unknown processor.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One step of a `processors:` list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessorSpec {
    /// Drop the line when the condition holds.
    Drop(ConditionStep),
    /// Drop the line unless the condition holds.
    Keep(ConditionStep),
    /// Set fields to static values.
    AddFields(AddFieldsStep),
    /// Remove fields (added or parsed ones, `message`, `stream`).
    DropFields(DropFieldsStep),
    /// Move an added or parsed field to another name.
    Rename(RenameStep),
    /// Regex with named captures, or a dissect pattern, into `target`.
    Parse(ParseStep),
    /// Set `@timestamp` from a field.
    Timestamp(TimestampStep),
}

impl ProcessorSpec {
    /// The key the step is written under.
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessorSpec::Drop(_) => "drop",
            ProcessorSpec::Keep(_) => "keep",
            ProcessorSpec::AddFields(_) => "add_fields",
            ProcessorSpec::DropFields(_) => "drop_fields",
            ProcessorSpec::Rename(_) => "rename",
            ProcessorSpec::Parse(_) => "parse",
            ProcessorSpec::Timestamp(_) => "timestamp",
        }
    }

    /// The name given with `name:`, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            ProcessorSpec::Drop(s) | ProcessorSpec::Keep(s) => s.name.as_deref(),
            ProcessorSpec::AddFields(s) => s.name.as_deref(),
            ProcessorSpec::DropFields(s) => s.name.as_deref(),
            ProcessorSpec::Rename(s) => s.name.as_deref(),
            ProcessorSpec::Parse(s) => s.name.as_deref(),
            ProcessorSpec::Timestamp(s) => s.name.as_deref(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionStep {
    /// Names the step in metrics (default: its position, e.g. `web/processors[0]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub when: ConditionSpec,
}

/// A condition on a line: one key, like Filebeat's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionSpec {
    /// Every named field equals its value (as text: `200` matches `"200"`).
    Equals(BTreeMap<String, Scalar>),
    /// Every named field matches its regex (unanchored; `^…$` to anchor).
    Regex(BTreeMap<String, String>),
    /// Every condition holds (true if empty).
    And(Vec<ConditionSpec>),
    /// Some condition holds (false if empty).
    Or(Vec<ConditionSpec>),
    Not(Box<ConditionSpec>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddFieldsStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Dotted path → value (`${VAR}` is expanded when the file is loaded).
    pub fields: BTreeMap<String, Scalar>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropFieldsStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub fields: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub from: String,
    /// Replaced if the line already has it.
    pub to: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParseStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `message` (default) or a field added or parsed before.
    #[serde(default = "default_parse_field")]
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dissect: Option<String>,
    /// Captures become `<target>.<capture name>`.
    pub target: String,
    #[serde(default)]
    pub on_failure: OnFailure,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A field added or parsed before.
    pub field: String,
    /// `rfc3339`, `unix`, `unix_ms`, or a strftime pattern (chrono's), e.g.
    /// `%d/%b/%Y:%H:%M:%S %z`; without an offset the time is UTC.
    pub format: String,
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// What a line that a `parse` or `timestamp` step fails on ships with. It
/// always ships, and the step's failure counter goes up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Unchanged by the step.
    Keep,
    /// Unchanged by the step, with a tag in `tags`
    /// (`_parse_failure`, `_timestamp_failure`).
    #[default]
    Tag,
}

pub fn default_parse_field() -> String {
    "message".to_owned()
}

/// A YAML scalar kept with its type: `add_fields` writes numbers and
/// booleans as JSON numbers and booleans; conditions compare the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scalar {
    String(String),
    /// As written (an integer or a float).
    Number(String),
    Bool(bool),
}

impl Scalar {
    /// The value as text (what a condition compares with).
    pub fn text(&self) -> &str {
        match self {
            Scalar::String(s) | Scalar::Number(s) => s,
            Scalar::Bool(true) => "true",
            Scalar::Bool(false) => "false",
        }
    }

    /// The value as a JSON value.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Scalar::String(s) => crate::encode::write_json_str(&mut out, s),
            Scalar::Number(n) => out.extend_from_slice(n.as_bytes()),
            Scalar::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        }
        out
    }
}

impl Serialize for Scalar {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scalar::String(v) => s.serialize_str(v),
            Scalar::Bool(b) => s.serialize_bool(*b),
            Scalar::Number(n) => {
                if let Ok(i) = n.parse::<i64>() {
                    s.serialize_i64(i)
                } else if let Ok(u) = n.parse::<u64>() {
                    s.serialize_u64(u)
                } else {
                    match n.parse::<f64>() {
                        Ok(f) => s.serialize_f64(f),
                        Err(_) => s.serialize_str(n),
                    }
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::String(v.to_owned()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Number(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Number(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                if v.is_finite() {
                    Ok(Scalar::Number(v.to_string()))
                } else {
                    Err(E::custom("a number must be finite"))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}
