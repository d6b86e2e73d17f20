//! Processor tests: each step and condition on real lines, the documents
//! parsed back from the encoder's bytes.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::encode::Encoder;
use crate::event::{EncodedSpan, FileIdentity, LineFlags, Stream};

const PATH: &str = "/var/log/pods/web_nginx-1_uid-1/nginx/0.log";
const FILE: FileIdentity = FileIdentity {
    dev: 1,
    ino: 2,
    fingerprint: 3,
};
const ACCESS: &str =
    r#"10.0.0.7 - - [26/Nov/2026:02:02:03 +0100] "GET /api/v1/orders HTTP/1.1" 200 512"#;
const HEALTH: &str = r#"10.0.0.9 - - [26/Nov/2026:02:02:04 +0100] "GET /healthz HTTP/1.1" 200 2"#;

fn specs(yaml: &str) -> Vec<ProcessorSpec> {
    serde_yaml_ng::with::singleton_map_recursive::deserialize(
        serde_yaml_ng::Deserializer::from_str(yaml),
    )
    .expect("processors parse")
}

fn compile(own: &str, top: &str) -> Result<Option<Chain>, ProcessorError> {
    let (own, top) = (specs(own), specs(top));
    Chain::compile("web", &source_lists(0, &own, &top), &|_| {
        Arc::new(ProcessorCounters::default())
    })
}

fn chain(yaml: &str) -> Arc<Chain> {
    Arc::new(compile(yaml, "[]").expect("compiles").expect("not empty"))
}

fn compile_error(yaml: &str) -> ProcessorError {
    compile(yaml, "[]").expect_err("must not compile")
}

/// Pod metadata as the k8s module writes it (labels dedotted).
fn metadata(app: &str, drop: Option<&str>) -> FileMetadata {
    FileMetadata {
        fragment: format!(
            r#","kubernetes":{{"namespace":"web","pod":{{"name":"nginx-1"}},"labels":{{"app":"{app}","app_kubernetes_io/name":"{app}"}}}}"#
        )
        .into_bytes(),
        json_target: None,
        drop_regex: drop.map(str::to_owned),
        multiline: None,
        origin: None,
    }
}

fn processor(chain: &Arc<Chain>) -> FileProcessor {
    FileProcessor::for_file(
        Some(chain.clone()),
        &metadata("nginx", None),
        Path::new(PATH),
        "node-1",
    )
    .expect("a chain makes a processor")
}

fn line(message: &str, stream: Option<Stream>) -> DecodedLine<'_> {
    DecodedLine {
        timestamp: Timestamp {
            secs: 1_800_000_000,
            nanos: 5,
        },
        stream,
        message: message.as_bytes(),
        flags: LineFlags::empty(),
        offset: 100,
        end: 100 + message.len() as u64 + 1,
    }
}

/// The document the line becomes (`None`: dropped), checked to be one JSON
/// object without a key twice at any level.
fn document(p: &mut FileProcessor, l: &DecodedLine<'_>) -> Option<Value> {
    let mut encoder = Encoder::new("node-1", "logs-%Y.%m.%d").expect("template");
    let ctx = encoder.file_context(Path::new(PATH), FILE, 0);
    let mut span = EncodedSpan::default();
    let processed = p.process(l)?;
    encoder.encode_processed(&ctx, l, &processed, &mut span);
    let text = std::str::from_utf8(span.item(0)).expect("UTF-8").to_owned();
    let doc = text.lines().nth(1).expect("a document line");
    no_duplicate_keys(doc);
    Some(serde_json::from_str(doc).expect("the document is JSON"))
}

/// Panics if some object of `json` has a key twice (serde_json would keep
/// the last one silently; Elasticsearch refuses the document).
fn no_duplicate_keys(json: &str) {
    struct Strict;
    impl<'de> serde::Deserialize<'de> for Strict {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(StrictVisitor)
        }
    }
    struct StrictVisitor;
    impl<'de> serde::de::Visitor<'de> for StrictVisitor {
        type Value = Strict;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_unit<E>(self) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
            while a.next_element::<Strict>()?.is_some() {}
            Ok(Strict)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = a.next_key::<String>()? {
                if !seen.insert(k.clone()) {
                    return Err(serde::de::Error::custom(format!("key {k:?} twice")));
                }
                a.next_value::<Strict>()?;
            }
            Ok(Strict)
        }
    }
    if let Err(e) = serde_json::from_str::<Strict>(json) {
        panic!("{e}: {json}");
    }
}

const NGINX: &str = r#"
- drop:
    name: health
    when: {regex: {message: '"GET /healthz '}}
- parse:
    dissect: '%{client} - - [%{ts}] "%{method} %{path} %{?proto}" %{status} %{bytes}'
    target: http
- timestamp: {field: http.ts, format: '%d/%b/%Y:%H:%M:%S %z'}
- drop_fields: {fields: [http.ts]}
- add_fields: {fields: {cluster: prod-1, env.tier: 2, env.canary: false}}
"#;

#[test]
fn nginx_chain_drops_health_checks_and_parses_the_rest() {
    let chain = chain(NGINX);
    let mut p = processor(&chain);
    assert!(document(&mut p, &line(HEALTH, Some(Stream::Stdout))).is_none());
    let doc = document(&mut p, &line(ACCESS, Some(Stream::Stdout))).expect("kept");
    assert_eq!(
        doc["http"],
        json!({"client": "10.0.0.7", "method": "GET", "path": "/api/v1/orders", "status": "200", "bytes": "512"})
    );
    assert_eq!(doc["@timestamp"], "2026-11-26T01:02:03.000000000Z");
    assert_eq!(doc["cluster"], "prod-1");
    assert_eq!(doc["env"], json!({"tier": 2, "canary": false}));
    assert_eq!(doc["message"], ACCESS);
    assert_eq!(doc["stream"], "stdout");
    assert!(doc.get("tags").is_none());
    let metrics = ProcessorMetrics::default();
    p.flush(&metrics);
    assert_eq!(p.take_unsettled(), 1, "the health check is to be settled");
    assert_eq!(
        chain.counters[0].dropped.load(Ordering::Relaxed),
        1,
        "counted under the step's name {:?}",
        chain.names()[0]
    );
}

#[test]
fn a_line_the_parse_does_not_fit_ships_tagged_and_counted() {
    let chain = chain(NGINX);
    let mut p = processor(&chain);
    let doc = document(&mut p, &line("panic: oh no", None)).expect("never dropped");
    assert_eq!(doc["message"], "panic: oh no");
    assert_eq!(
        doc["tags"],
        json!(["_parse_failure"]),
        "no http.time: the timestamp step has nothing to read, no failure of its own"
    );
    assert_eq!(doc["cluster"], "prod-1", "later steps still apply");
    assert!(doc.get("http").is_none());
    assert_eq!(doc["@timestamp"], "2027-01-15T08:00:00.000000005Z");
    p.flush(&ProcessorMetrics::default());
    assert_eq!(chain.counters[1].failed.load(Ordering::Relaxed), 1);
    assert_eq!(chain.counters[2].failed.load(Ordering::Relaxed), 0);

    // The shape fits but the time does not: the timestamp step fails.
    let bad_time = ACCESS.replace("26/Nov/2026:02:02:03 +0100", "yesterday");
    let doc = document(&mut p, &line(&bad_time, None)).expect("never dropped");
    assert_eq!(doc["tags"], json!(["_timestamp_failure"]));
    assert_eq!(doc["http"]["method"], "GET");
    assert_eq!(doc["@timestamp"], "2027-01-15T08:00:00.000000005Z");
    p.flush(&ProcessorMetrics::default());
    assert_eq!(chain.counters[2].failed.load(Ordering::Relaxed), 1);

    let keep =
        self::chain("- parse: {regex: '^(?P<level>[A-Z]+) ', target: log_level, on_failure: keep}");
    let mut p = processor(&keep);
    let doc = document(&mut p, &line("lowercase", None)).expect("kept");
    assert!(doc.get("tags").is_none(), "on_failure: keep adds no tag");
    p.flush(&ProcessorMetrics::default());
    assert_eq!(keep.counters[0].failed.load(Ordering::Relaxed), 1);
}

#[test]
fn regex_parse_fills_named_captures_and_skips_unmatched_groups() {
    let chain = chain(
        "- parse: {regex: '^(?P<level>[A-Z]+)(?: \\[(?P<thread>\\w+)\\])? (?P<rest>.*)$', target: app}",
    );
    let mut p = processor(&chain);
    let doc = document(&mut p, &line("WARN [main] disk \"full\"", None)).unwrap();
    assert_eq!(
        doc["app"],
        json!({"level": "WARN", "thread": "main", "rest": "disk \"full\""})
    );
    let doc = document(&mut p, &line("INFO started", None)).unwrap();
    assert_eq!(doc["app"], json!({"level": "INFO", "rest": "started"}));
}

#[test]
fn parse_reads_a_parsed_field_and_invalid_utf8_stays_valid_json() {
    let chain = chain(
        "- parse: {dissect: '%{method} %{path}', target: req}\n- parse: {field: req.path, regex: '^/(?P<service>[^/]+)/', target: route}",
    );
    let mut p = processor(&chain);
    let doc = document(&mut p, &line("GET /orders/17", None)).unwrap();
    assert_eq!(doc["route"]["service"], "orders");
    let bytes = b"GET /\xff\xfe/x";
    let l = DecodedLine {
        message: bytes,
        ..line("", None)
    };
    let doc = document(&mut p, &l).unwrap();
    assert_eq!(doc["req"]["path"], "/\u{fffd}\u{fffd}/x");
    // A Unicode class does not match invalid bytes: the second parse
    // fails on this line (tagged), the first one's fields stay.
    assert!(doc.get("route").is_none());
    assert_eq!(doc["tags"], json!(["_parse_failure"]));
    assert_eq!(doc["log"]["flags"], json!(["invalid_utf8"]));
}

#[test]
fn conditions_combine_fields_stream_and_metadata() {
    let chain = chain(
        r#"
- parse: {regex: 'status=(?P<status>\d+)', target: http, on_failure: keep}
- drop:
    when:
      and:
        - equals: {stream: stderr, kubernetes.labels.app: nginx}
        - or:
            - regex: {message: '^DEBUG'}
            - equals: {http.status: 204}
        - not: {regex: {kubernetes.namespace: '^kube-'}}
"#,
    );
    let mut p = processor(&chain);
    let stderr = Some(Stream::Stderr);
    assert!(document(&mut p, &line("DEBUG x", stderr)).is_none());
    assert!(document(&mut p, &line("done status=204", stderr)).is_none());
    assert!(document(&mut p, &line("done status=200", stderr)).is_some());
    assert!(document(&mut p, &line("DEBUG x", Some(Stream::Stdout))).is_some());
    // Another app's file: the metadata leaf is false for all its lines.
    let mut other = FileProcessor::for_file(
        Some(chain.clone()),
        &metadata("api", None),
        Path::new(PATH),
        "node-1",
    )
    .unwrap();
    assert!(document(&mut other, &line("DEBUG x", stderr)).is_some());
    // No metadata at all (host mode): absent fields never match.
    let mut host =
        FileProcessor::for_file(Some(chain), &FileMetadata::default(), Path::new(PATH), "h")
            .unwrap();
    assert!(document(&mut host, &line("DEBUG x", stderr)).is_some());
}

#[test]
fn keep_drops_what_does_not_match_and_absent_fields_do_not_match() {
    let chain = chain(
        "- keep: {when: {regex: {message: 'ERROR|WARN'}}}\n- drop: {when: {not: {equals: {host.name: node-1}}}}",
    );
    let mut p = processor(&chain);
    assert!(document(&mut p, &line("INFO fine", None)).is_none());
    assert!(document(&mut p, &line("ERROR bad", None)).is_some());
    let mut elsewhere = FileProcessor::for_file(
        Some(chain.clone()),
        &metadata("x", None),
        Path::new(PATH),
        "n2",
    )
    .unwrap();
    assert!(document(&mut elsewhere, &line("ERROR bad", None)).is_none());
    p.flush(&ProcessorMetrics::default());
    assert_eq!(chain.counters[0].dropped.load(Ordering::Relaxed), 1);
}

#[test]
fn rename_replaces_an_existing_field_and_drop_fields_removes_subtrees() {
    let chain = chain(
        r#"
- add_fields: {fields: {service.name: static, service.version: "1"}}
- parse: {dissect: '%{name} %{rest}', target: parsed}
- rename: {from: parsed.name, to: service.name}
- drop_fields: {fields: [parsed, message, stream]}
"#,
    );
    let mut p = processor(&chain);
    let doc = document(&mut p, &line("checkout ok", Some(Stream::Stdout))).unwrap();
    assert_eq!(doc["service"], json!({"name": "checkout", "version": "1"}));
    assert!(doc.get("parsed").is_none());
    assert!(doc.get("message").is_none());
    assert!(doc.get("stream").is_none());
    // The parse failed: the rename has nothing to move, the static stays.
    let doc = document(&mut p, &line("single", None)).unwrap();
    assert_eq!(doc["service"]["name"], "static");
}

#[test]
fn the_drop_annotation_applies_alone_and_before_the_chain() {
    let md = metadata("nginx", Some("^GET /(healthz|ready)"));
    let mut alone = FileProcessor::for_file(None, &md, Path::new(PATH), "n").expect("annotation");
    assert!(document(&mut alone, &line("GET /healthz", None)).is_none());
    let doc = document(&mut alone, &line("GET /orders", None)).unwrap();
    assert!(doc.get("tags").is_none());
    let metrics = ProcessorMetrics::default();
    alone.flush(&metrics);
    assert_eq!(
        metrics.snapshot(),
        [(DROP_ANNOTATION_COUNTER.to_owned(), 1, 0)]
    );
    // An invalid annotation is ignored (logged), nothing else processes.
    let bad = metadata("nginx", Some("(unclosed"));
    assert!(FileProcessor::for_file(None, &bad, Path::new(PATH), "n").is_none());
    assert!(
        FileProcessor::for_file(None, &metadata("nginx", None), Path::new(PATH), "n").is_none()
    );
}

#[test]
fn processors_are_pure_the_same_line_gives_the_same_document() {
    let chain = chain(NGINX);
    let mut a = processor(&chain);
    let mut b = processor(&chain);
    let first = document(&mut a, &line(ACCESS, Some(Stream::Stdout)));
    document(&mut a, &line("other", None));
    assert_eq!(first, document(&mut a, &line(ACCESS, Some(Stream::Stdout))));
    assert_eq!(first, document(&mut b, &line(ACCESS, Some(Stream::Stdout))));
}

#[test]
fn json_target_of_the_pod_hides_processor_fields_under_it() {
    let chain = chain("- add_fields: {fields: {json.x: 1, other: 2}}");
    let md = FileMetadata {
        json_target: Some("json".into()),
        ..metadata("a", None)
    };
    let mut p = FileProcessor::for_file(Some(chain), &md, Path::new(PATH), "n").unwrap();
    let processed = p.process(&line("{}", None)).unwrap();
    assert_eq!(processed.members, br#","other":2"#);
}

#[test]
fn bad_lists_name_the_key_and_say_why() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "- drop: {when: {regex: {message: '(unclosed'}}}",
            "sources[0].processors[0].drop.when.regex.message",
            "invalid regex",
        ),
        (
            "- drop: {when: {equals: {nope: x}}}",
            "sources[0].processors[0].drop.when.equals.nope",
            "unknown field \"nope\"",
        ),
        (
            "- drop: {when: {and: [{equals: {stream: x}}, {regex: {http.x: y}}]}}",
            "sources[0].processors[0].drop.when.and[1].regex.http.x",
            "unknown field",
        ),
        (
            "- parse: {regex: 'no captures', target: x}",
            "sources[0].processors[0].parse.regex",
            "no named capture",
        ),
        (
            "- parse: {target: x}",
            "sources[0].processors[0].parse",
            "exactly one of",
        ),
        (
            "- parse: {dissect: '%{a}%{b}', target: x}",
            "sources[0].processors[0].parse.dissect",
            "directly",
        ),
        (
            "- parse: {dissect: '%{a} %{b}', target: kubernetes}",
            "sources[0].processors[0].parse.target",
            "written by logship",
        ),
        (
            "- add_fields: {fields: {a: 1}}\n- add_fields: {fields: {a.b: 2}}",
            "sources[0].processors[1].add_fields.fields.a.b",
            "a value and an object",
        ),
        (
            "- drop_fields: {fields: [kubernetes.labels]}",
            "sources[0].processors[0].drop_fields.fields[0]",
            "unknown field",
        ),
        (
            "- drop_fields: {fields: [kubernetes.namespace]}",
            "sources[0].processors[0].drop_fields.fields[0]",
            "is metadata",
        ),
        (
            "- rename: {from: message, to: msg}",
            "sources[0].processors[0].rename.from",
            "cannot be renamed",
        ),
        (
            "- add_fields: {fields: {a: 1}}\n- rename: {from: a, to: '@timestamp'}",
            "sources[0].processors[1].rename.to",
            "written by logship",
        ),
        (
            "- timestamp: {field: message, format: rfc3339}",
            "sources[0].processors[0].timestamp.field",
            "parse it out first",
        ),
        (
            "- add_fields: {fields: {t: x}}\n- timestamp: {field: t, format: '%H:%M'}",
            "sources[0].processors[1].timestamp.format",
            "full date",
        ),
        (
            "- drop_fields: {fields: [message]}\n- drop: {when: {regex: {message: x}}}",
            "sources[0].processors[1].drop.when.regex.message",
            "unknown field \"message\"",
        ),
        (
            "- drop: {when: {equals: {}}}",
            "sources[0].processors[0].drop.when",
            "names no field",
        ),
    ];
    for (yaml, key, why) in cases {
        let e = compile_error(yaml);
        assert_eq!(e.key, *key, "{yaml}");
        assert!(e.message.contains(why), "{yaml}: {}", e.message);
    }
}

#[test]
fn the_top_level_list_runs_after_the_source_list_and_sees_its_fields() {
    let own = "- parse: {dissect: '%{level} %{rest}', target: app}";
    let top = "- drop: {when: {equals: {app.level: DEBUG}}}\n- add_fields: {fields: {cluster: c1}}";
    let chain = Arc::new(compile(own, top).unwrap().unwrap());
    assert_eq!(
        chain.names(),
        [
            "web.processors[0].parse",
            "processors[0].drop",
            "processors[1].add_fields"
        ]
    );
    let mut p = processor(&chain);
    assert!(document(&mut p, &line("DEBUG x", None)).is_none());
    assert_eq!(
        document(&mut p, &line("INFO x", None)).unwrap()["cluster"],
        "c1"
    );
    // Alone, the top-level list cannot read a field no step made.
    let e = compile("[]", top).unwrap_err();
    assert_eq!(e.key, "processors[0].drop.when.equals.app.level");
    assert!(compile("[]", "[]").unwrap().is_none());
}

fn any_line() -> impl Strategy<Value = (Vec<u8>, Option<Stream>)> {
    let message = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        "[a-zA-Z0-9 /\\[\\]\":.=-]{0,80}".prop_map(String::into_bytes),
        Just(ACCESS.as_bytes().to_vec()),
        Just(HEALTH.as_bytes().to_vec()),
    ];
    let stream = prop_oneof![
        Just(None),
        Just(Some(Stream::Stdout)),
        Just(Some(Stream::Stderr))
    ];
    (message, stream)
}

proptest! {
    /// A line is dropped only by a `drop` or `keep` step (each drop counted
    /// once); every other line yields exactly one valid document whose
    /// `message` is the line, whatever the bytes.
    #[test]
    fn no_line_is_lost_that_is_not_dropped_on_purpose(
        lines in proptest::collection::vec(any_line(), 1..40)
    ) {
        let chain = chain(&format!("{NGINX}\n- keep: {{when: {{not: {{regex: {{message: '^$'}}}}}}}}\n- rename: {{from: http.path, to: url.path}}"));
        let mut p = processor(&chain);
        let mut shipped = 0u64;
        for (message, stream) in &lines {
            let l = DecodedLine { message, stream: *stream, ..line("", None) };
            let health = memchr::memmem::find(message, b"\"GET /healthz ").is_some();
            match document(&mut p, &l) {
                Some(doc) => {
                    shipped += 1;
                    prop_assert!(!health && !message.is_empty());
                    let want = String::from_utf8_lossy(message);
                    prop_assert_eq!(doc["message"].as_str(), Some(&*want));
                }
                None => prop_assert!(health || message.is_empty(), "dropped {:?}", String::from_utf8_lossy(message)),
            }
        }
        p.flush(&ProcessorMetrics::default());
        let dropped: u64 = chain.counters.iter().map(|c| c.dropped.load(Ordering::Relaxed)).sum();
        prop_assert_eq!(shipped + dropped, lines.len() as u64);
        prop_assert_eq!(p.take_unsettled(), dropped);
    }
}
