//! Index names from a strftime template over the event's `@timestamp` (UTC),
//! e.g. `logs-%Y.%m.%d` → `logs-2026.11.26`.
//!
//! Owns validating templates and caching the current name. Promises:
//! - a template that validates yields, for every instant in years 0000–9999,
//!   a name Elasticsearch accepts: lowercase, not empty, at most 255 bytes,
//!   none of `\ / * ? " < > | , # :`, no whitespace or control characters, not
//!   starting with `-`, `_` or `+`, not `.` or `..`;
//! - directives that change more often than hourly (`%M`, `%S`, `%f`, `%s`,
//!   …) are rejected, so a name is formatted at most once per hour of event
//!   time ([`IndexName`] reformats only when the event's UTC day — or hour,
//!   for templates with `%H`-like directives — changes).
//!
//! [`FieldTemplate`] adds event fields on top: `{field}` or
//! `{field:-fallback}` placeholders (`logs-{kubernetes.namespace:-none}-%Y.%m.%d`),
//! resolved once per file (and stream) into an [`IndexTemplate`]. A field
//! value is made index-safe (lowercased; anything but `a-z 0-9 . _ -` becomes
//! `-`; at most [`MAX_FIELD_VALUE_BYTES`]); a missing or empty value takes the
//! fallback (`unknown` when none is written). A resolved name Elasticsearch
//! would refuse (say, one starting with `-`) falls back as a whole to the
//! template with every placeholder at its fallback, which validation proved
//! valid. Field names are checked against [`KNOWN_FIELDS`] at config load.

use std::fmt::Write as _;

use chrono::DateTime;
use chrono::format::{Fixed, Item, Numeric, StrftimeItems};

use super::IndexTemplateError;
use super::timestamp::{clamp, days_from_civil};
use crate::event::Timestamp;

/// Elasticsearch's limit on an index name, in bytes.
const MAX_INDEX_NAME_BYTES: usize = 255;

/// Characters Elasticsearch forbids anywhere in an index name (`:` since 7.0).
const FORBIDDEN: &[char] = &['\\', '/', '*', '?', '"', '<', '>', '|', ',', '#', ':'];

/// How often a template's output can change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Granularity {
    /// No time-dependent directive.
    Fixed,
    Daily,
    Hourly,
}

impl Granularity {
    fn period_secs(self) -> Option<i64> {
        match self {
            Granularity::Fixed => None,
            Granularity::Daily => Some(86_400),
            Granularity::Hourly => Some(3_600),
        }
    }
}

/// Instants at which each directive's output is checked: day 1, month 1,
/// hour 0 (padding with spaces shows up here), an afternoon and a late
/// evening in autumn.
const SAMPLE_SECS: [i64; 3] = [
    days_from_civil(2001, 1, 1) * 86_400,
    days_from_civil(2026, 11, 26) * 86_400 + 13 * 3_600,
    days_from_civil(2026, 11, 26) * 86_400 + 23 * 3_600,
];

/// A validated index template.
#[derive(Clone, Debug)]
pub struct IndexTemplate {
    template: String,
    items: Vec<Item<'static>>,
    granularity: Granularity,
}

impl IndexTemplate {
    pub fn parse(template: &str) -> Result<Self, IndexTemplateError> {
        let err = |reason: String| IndexTemplateError {
            template: template.to_owned(),
            reason,
        };
        if template.is_empty() {
            return Err(err("the index name is empty".into()));
        }
        let mut granularity = Granularity::Fixed;
        for segment in segments(template) {
            match segment {
                Segment::Literal(text) => {
                    check_characters(text, &format!("literal text {text:?}")).map_err(err)?
                }
                Segment::Directive(directive) => {
                    let items = StrftimeItems::new(directive)
                        .parse_to_owned()
                        .map_err(|_| err(format!("unknown strftime directive {directive:?}")))?;
                    for item in &items {
                        let g = directive_granularity(item).ok_or_else(|| {
                            err(format!(
                                "directive {directive:?} changes more often than hourly (or is not \
                                 supported); index names may change at most once an hour"
                            ))
                        })?;
                        granularity = granularity.max(g);
                    }
                    for secs in SAMPLE_SECS {
                        let text = format_items(&items, secs).ok_or_else(|| {
                            err(format!("directive {directive:?} cannot be formatted"))
                        })?;
                        check_characters(
                            &text,
                            &format!("directive {directive:?} (gives {text:?})"),
                        )
                        .map_err(err)?;
                    }
                }
                Segment::Dangling => {
                    return Err(err(
                        "it ends with a lone '%'; write '%%' for a literal '%'".into()
                    ));
                }
            }
        }
        let items = StrftimeItems::new(template)
            .parse_to_owned()
            .map_err(|e| err(format!("strftime parse error: {e}")))?;
        for secs in SAMPLE_SECS {
            let name =
                format_items(&items, secs).ok_or_else(|| err("it cannot be formatted".into()))?;
            check_whole_name(&name).map_err(|reason| err(format!("{reason} (e.g. {name:?})")))?;
        }
        Ok(IndexTemplate {
            template: template.to_owned(),
            items,
            granularity,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.template
    }

    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The index name for an event at `ts` (clamped to years 0000–9999).
    pub fn format(&self, ts: Timestamp) -> String {
        let secs = clamp(ts).secs;
        // Validation formatted these items already; a failure here cannot
        // happen, and the raw template is the least surprising fallback.
        format_items(&self.items, secs).unwrap_or_else(|| self.template.clone())
    }

    /// Which period of event time `ts` falls in; the name is the same for
    /// every instant of one period.
    fn period(&self, ts: Timestamp) -> i64 {
        match self.granularity.period_secs() {
            Some(p) => clamp(ts).secs.div_euclid(p),
            None => 0,
        }
    }
}

/// The index name for the current period, reformatted only when an event's
/// period differs from the previous event's.
#[derive(Debug)]
pub struct IndexName {
    template: IndexTemplate,
    period: Option<i64>,
    name: String,
    /// Bumped each time `name` changes, so callers can cache derived bytes.
    version: u64,
}

impl IndexName {
    pub fn new(template: IndexTemplate) -> Self {
        IndexName {
            template,
            period: None,
            name: String::new(),
            version: 0,
        }
    }

    /// The name for an event at `ts`, and a version number that changes
    /// whenever the name was recomputed.
    #[inline]
    pub fn for_event(&mut self, ts: Timestamp) -> (&str, u64) {
        let period = self.template.period(ts);
        if self.period != Some(period) {
            self.name = self.template.format(ts);
            self.period = Some(period);
            self.version += 1;
        }
        (&self.name, self.version)
    }

    pub fn template(&self) -> &IndexTemplate {
        &self.template
    }
}

/// Checks a template (see the module doc for the rules), field
/// placeholders included.
pub fn validate_index_template(template: &str) -> Result<(), IndexTemplateError> {
    FieldTemplate::parse(template).map(|_| ())
}

enum Segment<'a> {
    Literal(&'a str),
    /// `%` with its modifiers and specifier, e.g. `%Y`, `%-d`, `%.3f`, `%::z`.
    Directive(&'a str),
    /// A `%` at the very end.
    Dangling,
}

/// Splits a template into literal runs and single directives (for error
/// messages that name the offending part).
fn segments(template: &str) -> impl Iterator<Item = Segment<'_>> {
    let mut rest = template;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if let Some(after) = rest.strip_prefix('%') {
            let modifiers = after
                .find(|c: char| !matches!(c, '-' | '_' | '0'..='9' | '.' | ':' | '#'))
                .unwrap_or(after.len());
            let Some(spec) = after[modifiers..].chars().next() else {
                rest = "";
                return Some(Segment::Dangling);
            };
            let len = 1 + modifiers + spec.len_utf8();
            let (directive, tail) = rest.split_at(len);
            rest = tail;
            Some(Segment::Directive(directive))
        } else {
            let len = rest.find('%').unwrap_or(rest.len());
            let (literal, tail) = rest.split_at(len);
            rest = tail;
            Some(Segment::Literal(literal))
        }
    })
}

/// How often the output of one parsed item changes; `None` for items that
/// change more often than hourly or are not supported.
fn directive_granularity(item: &Item<'_>) -> Option<Granularity> {
    match item {
        Item::Literal(_) | Item::OwnedLiteral(_) | Item::Space(_) | Item::OwnedSpace(_) => {
            Some(Granularity::Fixed)
        }
        Item::Numeric(n, _) => match n {
            Numeric::Year
            | Numeric::YearDiv100
            | Numeric::YearMod100
            | Numeric::IsoYear
            | Numeric::IsoYearDiv100
            | Numeric::IsoYearMod100
            | Numeric::Quarter
            | Numeric::Month
            | Numeric::Day
            | Numeric::WeekFromSun
            | Numeric::WeekFromMon
            | Numeric::IsoWeek
            | Numeric::NumDaysFromSun
            | Numeric::WeekdayFromMon
            | Numeric::Ordinal => Some(Granularity::Daily),
            Numeric::Hour | Numeric::Hour12 => Some(Granularity::Hourly),
            _ => None,
        },
        Item::Fixed(f) => match f {
            Fixed::ShortMonthName
            | Fixed::LongMonthName
            | Fixed::ShortWeekdayName
            | Fixed::LongWeekdayName => Some(Granularity::Daily),
            Fixed::LowerAmPm | Fixed::UpperAmPm => Some(Granularity::Hourly),
            // Always the same in UTC.
            Fixed::TimezoneName
            | Fixed::TimezoneOffset
            | Fixed::TimezoneOffsetZ
            | Fixed::TimezoneOffsetColon
            | Fixed::TimezoneOffsetColonZ
            | Fixed::TimezoneOffsetDoubleColon
            | Fixed::TimezoneOffsetTripleColon => Some(Granularity::Fixed),
            _ => None,
        },
        _ => None,
    }
}

fn format_items(items: &[Item<'static>], secs: i64) -> Option<String> {
    let time = DateTime::from_timestamp(secs, 0)?;
    let mut out = String::new();
    write!(out, "{}", time.format_with_items(items.iter())).ok()?;
    Some(out)
}

fn check_characters(text: &str, what: &str) -> Result<(), String> {
    if let Some(c) = text.chars().find(|c| FORBIDDEN.contains(c)) {
        return Err(format!(
            "{what} contains {c:?}, which Elasticsearch forbids in index names"
        ));
    }
    if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{what} contains {c:?}; index names cannot contain whitespace or control characters"
        ));
    }
    if let Some(c) = text.chars().find(|c| c.is_uppercase()) {
        return Err(format!(
            "{what} contains uppercase {c:?}; index names must be lowercase"
        ));
    }
    Ok(())
}

fn check_whole_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the index name is empty".into());
    }
    if name == "." || name == ".." {
        return Err("the index name cannot be '.' or '..'".into());
    }
    if let Some(c) = name.chars().next().filter(|c| matches!(c, '-' | '_' | '+')) {
        return Err(format!("the index name cannot start with {c:?}"));
    }
    if name.len() > MAX_INDEX_NAME_BYTES {
        return Err(format!(
            "the index name is {} bytes, over Elasticsearch's limit of {MAX_INDEX_NAME_BYTES}",
            name.len()
        ));
    }
    check_characters(name, "the index name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn ts(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Timestamp {
        Timestamp {
            secs: Utc
                .with_ymd_and_hms(y, mo, d, h, mi, s)
                .unwrap()
                .timestamp(),
            nanos: 0,
        }
    }

    fn reason(template: &str) -> String {
        match validate_index_template(template) {
            Ok(()) => panic!("{template:?} was accepted"),
            Err(e) => {
                assert_eq!(e.template, template);
                let text = e.to_string();
                assert!(
                    text.contains(&format!("{template:?}")),
                    "message names the template: {text}"
                );
                e.reason
            }
        }
    }

    #[test]
    fn accepts_common_templates() {
        for (template, granularity) in [
            ("logs-%Y.%m.%d", Granularity::Daily),
            ("logs", Granularity::Fixed),
            ("logs-%Y.%m.%d-%H", Granularity::Hourly),
            ("logs-%G.w%V", Granularity::Daily),
            ("logs-%y%m%d-%-I%P", Granularity::Hourly),
            ("logs-%j", Granularity::Daily),
            (".logship-%Y", Granularity::Daily),
            ("logs-100%%", Granularity::Fixed),
            ("logs-{kubernetes.namespace}-%Y", Granularity::Daily),
        ] {
            let parsed =
                IndexTemplate::parse(template).unwrap_or_else(|e| panic!("{template:?}: {e}"));
            assert_eq!(parsed.granularity(), granularity, "{template:?}");
        }
    }

    #[test]
    fn formats_like_chrono_strftime() {
        let t = ts(2026, 11, 26, 1, 2, 3);
        let template = IndexTemplate::parse("logs-%Y.%m.%d-%H").unwrap();
        let want = DateTime::from_timestamp(t.secs, 0)
            .unwrap()
            .format("logs-%Y.%m.%d-%H")
            .to_string();
        assert_eq!(template.format(t), want);
        assert_eq!(template.format(t), "logs-2026.11.26-01");
    }

    #[test]
    fn rejects_sub_hour_directives() {
        for template in [
            "logs-%M",
            "logs-%Y-%S",
            "logs-%f",
            "logs-%.3f",
            "logs-%s",
            "logs-%T",
            "logs-%R",
            "logs-%+",
        ] {
            let why = reason(template);
            assert!(
                why.contains("more often than hourly") || why.contains("forbids"),
                "{template:?}: {why}"
            );
        }
        assert!(reason("logs-%M").contains("\"%M\""));
    }

    #[test]
    fn rejects_unknown_and_dangling_directives() {
        assert!(reason("logs-%Q").contains("unknown strftime directive \"%Q\""));
        assert!(reason("logs-%").contains("lone '%'"));
    }

    #[test]
    fn rejects_names_elasticsearch_forbids() {
        assert!(reason("").contains("empty"));
        assert!(reason("Logs-%Y").contains("uppercase 'L'"));
        assert!(
            reason("logs-%b").contains("uppercase"),
            "month names are capitalised"
        );
        assert!(reason("logs-%p").contains("uppercase"), "AM/PM");
        assert!(reason("logs-%Z").contains("uppercase"), "UTC");
        assert!(
            reason("logs-%e").contains("whitespace"),
            "day 1 is padded with a space"
        );
        assert!(reason("logs-%n").contains("whitespace"));
        for c in ['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':'] {
            let why = reason(&format!("logs{c}x"));
            assert!(why.contains(&format!("{c:?}")), "{c:?}: {why}");
        }
        for lead in ["-logs", "_logs", "+logs"] {
            assert!(reason(lead).contains("cannot start with"), "{lead}");
        }
        assert!(reason(".").contains("'.' or '..'"));
        assert!(reason("..").contains("'.' or '..'"));
        assert!(reason(&"x".repeat(256)).contains("over Elasticsearch's limit"));
        assert!(validate_index_template(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn recomputes_only_when_the_day_changes() {
        let mut index = IndexName::new(IndexTemplate::parse("logs-%Y.%m.%d").unwrap());
        let before_midnight = ts(2026, 11, 26, 23, 59, 59);
        let (name, v1) = index.for_event(before_midnight);
        assert_eq!(name, "logs-2026.11.26");
        let (name, v2) = index.for_event(ts(2026, 11, 26, 0, 0, 0));
        assert_eq!((name, v2), ("logs-2026.11.26", v1), "same day: cached");
        let (name, v3) = index.for_event(Timestamp {
            secs: before_midnight.secs + 1,
            nanos: 0,
        });
        assert_eq!(name, "logs-2026.11.27");
        assert_ne!(v3, v1);
        let (name, v4) = index.for_event(ts(2026, 11, 27, 18, 0, 0));
        assert_eq!((name, v4), ("logs-2026.11.27", v3));
        // A late line from the previous day goes to that day's index.
        assert_eq!(index.for_event(before_midnight).0, "logs-2026.11.26");
    }

    #[test]
    fn hourly_templates_recompute_every_hour() {
        let mut index = IndexName::new(IndexTemplate::parse("logs-%Y.%m.%d.%H").unwrap());
        let (_, v1) = index.for_event(ts(2026, 11, 26, 5, 0, 0));
        let (name, v2) = index.for_event(ts(2026, 11, 26, 5, 59, 59));
        assert_eq!((name, v2), ("logs-2026.11.26.05", v1));
        assert_eq!(
            index.for_event(ts(2026, 11, 26, 6, 0, 0)).0,
            "logs-2026.11.26.06"
        );
    }

    #[test]
    fn fixed_templates_format_once() {
        let mut index = IndexName::new(IndexTemplate::parse("logs").unwrap());
        let (_, v1) = index.for_event(ts(2001, 1, 1, 0, 0, 0));
        let (name, v2) = index.for_event(ts(2090, 6, 1, 0, 0, 0));
        assert_eq!((name, v2), ("logs", v1));
    }
}

/// Longest field value put into an index name.
pub const MAX_FIELD_VALUE_BYTES: usize = 64;

/// Fallback of a placeholder written without one.
pub const DEFAULT_FIELD_FALLBACK: &str = "unknown";

/// Event fields an index template may name. Fields the encoder does not
/// fill yet (the Kubernetes ones, until metadata enrichment provides them)
/// take their fallback. `kubernetes.labels.*` and `kubernetes.annotations.*`
/// are accepted too.
pub const KNOWN_FIELDS: &[&str] = &[
    "host.name",
    "log.file.path",
    "stream",
    "kubernetes.namespace",
    "kubernetes.pod.name",
    "kubernetes.pod.uid",
    "kubernetes.container.name",
    "kubernetes.node.name",
    "kubernetes.deployment.name",
    "container.id",
    "container.image.name",
    "container.runtime",
];

/// A field `{name}` placeholders (and processor conditions) may name.
pub fn known_field(name: &str) -> bool {
    KNOWN_FIELDS.contains(&name)
        || ["kubernetes.labels.", "kubernetes.annotations."]
            .iter()
            .any(|p| name.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Field { name: String, fallback: String },
}

/// An index template with `{field}` placeholders (see the module doc).
#[derive(Clone, Debug)]
pub struct FieldTemplate {
    parts: Vec<Part>,
    /// Every placeholder at its fallback; validated.
    fallback: IndexTemplate,
}

impl FieldTemplate {
    pub fn parse(template: &str) -> Result<Self, IndexTemplateError> {
        let err = |reason: String| IndexTemplateError {
            template: template.to_owned(),
            reason,
        };
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(err("'}' without a '{' before it".into()));
            }
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| err("'{' without a closing '}'".into()))?;
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let inner = &rest[open + 1..close];
            let (name, fallback) = match inner.split_once(":-") {
                Some((n, f)) => (n.trim(), f.to_owned()),
                None => (inner.trim(), DEFAULT_FIELD_FALLBACK.to_owned()),
            };
            if !known_field(name) {
                return Err(err(format!(
                    "unknown field {name:?} in {{{inner}}}; known fields: {}, \
                     kubernetes.labels.<key>, kubernetes.annotations.<key>",
                    KNOWN_FIELDS.join(", ")
                )));
            }
            if fallback.contains(['%', '{']) {
                return Err(err(format!(
                    "the fallback {fallback:?} of {{{inner}}} must be plain text"
                )));
            }
            parts.push(Part::Field {
                name: name.to_owned(),
                fallback,
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        let fallback_text = render(&parts, &|_| None);
        let fallback = IndexTemplate::parse(&fallback_text).map_err(|e| IndexTemplateError {
            template: template.to_owned(),
            reason: format!("with every field at its fallback: {}", e.reason),
        })?;
        // Field values are sanitised; a sample value must give a valid name too.
        IndexTemplate::parse(&render(&parts, &|_| Some("x"))).map_err(|e| IndexTemplateError {
            template: template.to_owned(),
            reason: e.reason,
        })?;
        Ok(FieldTemplate { parts, fallback })
    }

    /// Whether any placeholder names a field.
    pub fn has_fields(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Field { .. }))
    }

    /// Whether `{stream}` appears (the name then depends on each line).
    pub fn uses_stream(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Field { name, .. } if name == "stream"))
    }

    /// The template with every field looked up in `lookup`.
    pub fn resolve<'v>(&self, lookup: &dyn Fn(&str) -> Option<&'v str>) -> IndexTemplate {
        if !self.has_fields() {
            return self.fallback.clone();
        }
        IndexTemplate::parse(&render(&self.parts, lookup)).unwrap_or_else(|_| self.fallback.clone())
    }

    /// The template with every field at its fallback.
    pub fn fallback(&self) -> &IndexTemplate {
        &self.fallback
    }

    /// An index pattern matching every name this template can produce
    /// (placeholders and directives become `*`), for index templates.
    pub fn pattern(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => {
                    for segment in segments(text) {
                        match segment {
                            Segment::Literal(l) => out.push_str(l),
                            _ => {
                                if !out.ends_with('*') {
                                    out.push('*')
                                }
                            }
                        }
                    }
                }
                Part::Field { .. } => {
                    if !out.ends_with('*') {
                        out.push('*')
                    }
                }
            }
        }
        out
    }
}

fn render<'v>(parts: &[Part], lookup: &dyn Fn(&str) -> Option<&'v str>) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Field { name, fallback } => {
                let value = lookup(name).map(sanitize).filter(|v| !v.is_empty());
                out.push_str(value.as_deref().unwrap_or(fallback));
            }
        }
    }
    out
}

/// A field value made safe inside an index name.
fn sanitize(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_FIELD_VALUE_BYTES));
    for c in value.chars() {
        if out.len() >= MAX_FIELD_VALUE_BYTES {
            break;
        }
        let c = c.to_ascii_lowercase();
        out.push(
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            },
        );
    }
    out
}

#[cfg(test)]
mod field_tests {
    use super::*;
    use crate::event::Timestamp;

    fn ts() -> Timestamp {
        Timestamp {
            secs: days_from_civil(2026, 11, 26) * 86_400,
            nanos: 0,
        }
    }

    #[test]
    fn fields_resolve_with_fallbacks_and_safe_values() {
        let t = FieldTemplate::parse("logs-{kubernetes.namespace:-none}-%Y.%m.%d").unwrap();
        assert!(t.has_fields() && !t.uses_stream());
        let with = t.resolve(&|f| (f == "kubernetes.namespace").then_some("Kube System/x"));
        assert_eq!(with.format(ts()), "logs-kube-system-x-2026.11.26");
        let without = t.resolve(&|_| None);
        assert_eq!(without.format(ts()), "logs-none-2026.11.26");
        assert_eq!(t.pattern(), "logs-*-*.*.*");
        // Default fallback, and a value that would make an invalid name.
        let t = FieldTemplate::parse("{stream}").unwrap();
        assert!(t.uses_stream());
        assert_eq!(t.resolve(&|_| None).format(ts()), "unknown");
        assert_eq!(t.resolve(&|_| Some("_bad")).format(ts()), "unknown");
        assert_eq!(t.resolve(&|_| Some("stdout")).format(ts()), "stdout");
        let long = "a".repeat(500);
        let name = FieldTemplate::parse("x-{host.name}")
            .unwrap()
            .resolve(&|_| Some(&long))
            .format(ts());
        assert_eq!(name.len(), 2 + MAX_FIELD_VALUE_BYTES);
    }

    #[test]
    fn bad_placeholders_are_refused_with_the_reason() {
        for (template, reason) in [
            ("logs-{kubernetes.namspace}", "unknown field"),
            ("logs-{host.name", "closing"),
            ("logs-}", "without a '{'"),
            ("logs-{host.name:-A B}", "fallback"),
            ("logs-{host.name:-%Y}", "plain text"),
        ] {
            let e = FieldTemplate::parse(template).unwrap_err();
            assert!(e.to_string().contains(reason), "{template}: {e}");
        }
        assert!(FieldTemplate::parse("logs-{kubernetes.labels.app}").is_ok());
    }
}
