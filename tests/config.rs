//! The config file as a user meets it: the real `logship` binary run on temp
//! config files, checking exit codes and that every error names its key and
//! line.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_logship");

/// A valid config; `LOGSHIP_TEST_NODE` is optional (it has a default).
const GOOD: &str = r#"# logship test config
node_name: ${LOGSHIP_TEST_NODE:-default-node}
data_dir: /tmp/logship-config-test
sources:
  - name: containers
    include: ["/var/log/containers/*.log"]
    max_line_bytes: 2MiB
    rescan_interval: 1m 30s
sink:
  elasticsearch:
    hosts: ["http://127.0.0.1:9200"]
    batch: {max_bytes: 512KB, timeout: 250ms}
"#;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn logship(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("LOGSHIP_TEST_NODE")
        .env_remove("LOGSHIP_TEST_UNSET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run logship");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("logship.yaml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8 temp path").to_owned()
}

fn check_config(text: &str, env: &[(&str, &str)]) -> (Run, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, text);
    (logship(&["check-config", "--config", &path], env), path)
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in config")
        + 1
}

fn assert_config_error(run: &Run, path: &str, line: usize, key: &str) {
    assert_eq!(run.code, Some(64), "stderr: {}", run.stderr);
    let expected = format!("config {path}: line {line}: {key}: ");
    assert!(
        run.stderr.contains(&expected),
        "expected {expected:?} in stderr: {}",
        run.stderr
    );
    assert!(
        run.stdout.is_empty(),
        "nothing on stdout on error: {}",
        run.stdout
    );
}

#[test]
fn unknown_key_exits_64_naming_key_and_line() {
    let text = GOOD.replace("    include:", "    inlcude:");
    let (run, path) = check_config(&text, &[]);
    assert_config_error(&run, &path, line_of(&text, "inlcude"), "sources[0].inlcude");
    assert!(
        run.stderr.contains("unknown field `inlcude`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("did you mean `include`?"),
        "{}",
        run.stderr
    );
}

#[test]
fn journald_mistakes_exit_64_naming_key_and_line() {
    let journald = GOOD.replace(
        "sink:",
        "  - name: journal\n    journald:\n      units: [ssh]\n      sinse: now\nsink:",
    );
    let (run, path) = check_config(&journald, &[]);
    assert_config_error(
        &run,
        &path,
        line_of(&journald, "sinse"),
        "sources[1].journald.sinse",
    );
    assert!(
        run.stderr.contains("did you mean `since`?"),
        "{}",
        run.stderr
    );
    let file_key = journald.replace("      sinse: now\n", "    format: plain\n");
    let (run, path) = check_config(&file_key, &[]);
    assert_config_error(
        &run,
        &path,
        line_of(&file_key, "format: plain"),
        "sources[1].format",
    );
    let fine = journald.replace("sinse", "since");
    let (run, _) = check_config(&fine, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("journald:"), "{}", run.stdout);
}

#[test]
fn run_refuses_a_bad_config_with_64_too() {
    let text = GOOD.replace(
        "  elasticsearch:",
        "  elasticsearch:\n    compresion: {gzip: 1}",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, &text);
    let run = logship(&["run", "--config", &path], &[]);
    assert_config_error(
        &run,
        &path,
        line_of(&text, "compresion"),
        "sink.elasticsearch.compresion",
    );
}

#[test]
fn missing_hosts_exits_64_naming_it() {
    let text = GOOD.replace("    hosts: [\"http://127.0.0.1:9200\"]\n", "");
    let (run, path) = check_config(&text, &[]);
    assert_config_error(
        &run,
        &path,
        line_of(&text, "elasticsearch:"),
        "sink.elasticsearch.hosts",
    );
    assert!(
        run.stderr.contains("required field `hosts` is missing"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_glob_exits_64_naming_include_and_its_line() {
    let text = GOOD.replace(
        "    include: [\"/var/log/containers/*.log\"]",
        "    include:\n      - /var/log/containers/*.log\n      - \"/var/log/pods/[unclosed/*.log\"",
    );
    let (run, path) = check_config(&text, &[]);
    assert_config_error(
        &run,
        &path,
        line_of(&text, "[unclosed"),
        "sources[0].include[1]",
    );
    assert!(
        run.stderr.contains("/var/log/pods/[unclosed/*.log"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_processors_exit_64_naming_key_and_line() {
    let cases = [
        (
            "      - drop: {when: {regex: {message: '(unclosed'}}}",
            "(unclosed",
            "sources[0].processors[0].drop.when.regex.message",
            "invalid regex",
        ),
        (
            "      - drop: {when: {equals: {http.status: 500}}}",
            "http.status",
            "sources[0].processors[0].drop.when.equals.http.status",
            "unknown field \"http.status\"",
        ),
        (
            "      - grep: {regex: x}",
            "grep",
            "sources[0].processors[0]",
            "unknown variant `grep`",
        ),
    ];
    for (step, needle, key, why) in cases {
        let text = GOOD.replace(
            "    include: [\"/var/log/containers/*.log\"]",
            &format!("    include: [\"/var/log/containers/*.log\"]\n    processors:\n{step}"),
        );
        let (run, path) = check_config(&text, &[]);
        assert_config_error(&run, &path, line_of(&text, needle), key);
        assert!(run.stderr.contains(why), "{}", run.stderr);
    }
}

#[test]
fn relative_glob_is_refused() {
    let text = GOOD.replace("\"/var/log/containers/*.log\"", "\"containers/*.log\"");
    let (run, path) = check_config(&text, &[]);
    assert_config_error(
        &run,
        &path,
        line_of(&text, "containers/*.log"),
        "sources[0].include[0]",
    );
    assert!(run.stderr.contains("absolute"), "{}", run.stderr);
}

#[test]
fn unset_env_var_exits_64_naming_it_and_its_line() {
    let text = GOOD.replace(
        "data_dir: /tmp/logship-config-test",
        "data_dir: ${LOGSHIP_TEST_UNSET}/data",
    );
    let (run, path) = check_config(&text, &[]);
    assert_config_error(
        &run,
        &path,
        line_of(&text, "LOGSHIP_TEST_UNSET"),
        "data_dir",
    );
    assert!(
        run.stderr.contains("LOGSHIP_TEST_UNSET is not set"),
        "{}",
        run.stderr
    );
}

#[test]
fn env_vars_and_defaults_are_interpolated() {
    let (run, _) = check_config(GOOD, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("node_name: default-node\n"),
        "{}",
        run.stdout
    );

    let (run, _) = check_config(GOOD, &[("LOGSHIP_TEST_NODE", "node-from-env")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("node_name: node-from-env\n"),
        "{}",
        run.stdout
    );

    let text = GOOD.replace("/tmp/logship-config-test", "/tmp/cost-$$5");
    let (run, _) = check_config(&text, &[]);
    assert!(
        run.stdout.contains("data_dir: /tmp/cost-$5\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn check_config_prints_the_effective_config_with_defaults() {
    let (run, _) = check_config(GOOD, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = &run.stdout;
    // Given values, with units converted.
    assert!(
        out.contains(&format!("max_line_bytes: {}\n", 2 * 1024 * 1024)),
        "{out}"
    );
    assert!(out.contains("rescan_interval: 1m 30s\n"), "{out}");
    assert!(out.contains("max_bytes: 512000\n"), "{out}");
    assert!(out.contains("timeout: 250ms\n"), "{out}");
    // Defaults of keys that were left out.
    for default in [
        "shutdown_timeout: 25s",
        "format: text",
        "level: info",
        "format: auto",
        "read_from: beginning",
        "include_compressed: false",
        "exclude: []",
        "index: logs-%Y.%m.%d",
        "max_events: 5000",
        "gzip: 1",
        "concurrency: 2",
        "request_timeout: 1m",
        "initial_backoff: 100ms",
        "max_backoff: 30s",
        "give_up_after: 1h",
    ] {
        assert!(
            out.contains(&format!("{default}\n")),
            "missing {default:?} in:\n{out}"
        );
    }
}

#[test]
fn effective_config_is_itself_a_valid_config() {
    let (first, _) = check_config(GOOD, &[]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let (second, _) = check_config(&first.stdout, &[]);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert_eq!(second.stdout, first.stdout);
}

#[test]
fn bad_sizes_and_durations_name_their_key() {
    let text = GOOD.replace("max_line_bytes: 2MiB", "max_line_bytes: 2 MeB");
    let (run, path) = check_config(&text, &[]);
    assert_config_error(
        &run,
        &path,
        line_of(&text, "max_line_bytes"),
        "sources[0].max_line_bytes",
    );

    let text = GOOD.replace("timeout: 250ms", "timeout: 250");
    let (run, path) = check_config(&text, &[]);
    assert_config_error(
        &run,
        &path,
        line_of(&text, "timeout: 250"),
        "sink.elasticsearch.batch.timeout",
    );
    assert!(run.stderr.contains("unit is required"), "{}", run.stderr);
}

#[test]
fn unreadable_config_exits_64_naming_the_file() {
    let run = logship(
        &["check-config", "--config", "/nonexistent/logship.yaml"],
        &[],
    );
    assert_eq!(run.code, Some(64), "{}", run.stderr);
    assert!(
        run.stderr.contains("/nonexistent/logship.yaml"),
        "{}",
        run.stderr
    );
}

/// `logship version` and `logship --version` print the crate version and
/// the commit the binary was built from, `git rev-parse --short HEAD`
/// (`-dirty` when its sources differed from it; `unknown` outside a git
/// checkout).
#[test]
fn version_names_the_commit_it_was_built_from() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--show-toplevel", "--short", "HEAD"])
        .output();
    let head = match git {
        Ok(out) if out.status.success() => {
            let out = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut lines = out.lines();
            let top = lines
                .next()
                .and_then(|top| Path::new(top).canonicalize().ok());
            let this_checkout = top.is_some() && top == root.canonicalize().ok();
            lines.next().filter(|_| this_checkout).map(str::to_owned)
        }
        _ => None,
    };
    let version = env!("CARGO_PKG_VERSION");
    let expected = match &head {
        Some(commit) => vec![
            format!("logship {version} ({commit})\n"),
            format!("logship {version} ({commit}-dirty)\n"),
        ],
        None => vec![format!("logship {version} (unknown)\n")],
    };
    for args in [&["--version"][..], &["version"][..]] {
        let run = logship(args, &[]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert!(
            expected.contains(&run.stdout),
            "logship {args:?} printed {:?}, expected one of {expected:?}",
            run.stdout
        );
    }
}

/// Every config example in the documentation — each ```yaml block of
/// README.md and of docs/*.md — is accepted by `check-config`, so the docs
/// cannot drift from the code. A fragment (a block without a top-level
/// `sources:` or `sink:`, such as a `buffer:` section) is checked inside a
/// minimal config that supplies what it lacks.
#[test]
fn documented_examples_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages: Vec<_> = std::fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    let env = [
        ("NODE_NAME", "example-node"),
        ("POD_NAME", "example-pod"),
        ("POD_NAMESPACE", "example-namespace"),
        ("POD_UID", "00000000-0000-4000-8000-000000000000"),
    ];
    let mut checked = Vec::new();
    for path in std::iter::once(root.join("README.md")).chain(pages) {
        let doc = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let name = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        for (line, block) in yaml_blocks(&doc) {
            let mut config = String::new();
            if !has_top_level_key(&block, "sources") {
                config.push_str(
                    "sources: [{name: example, include: [\"/var/log/example/*.log\"]}]\n",
                );
            }
            if !has_top_level_key(&block, "sink") {
                config.push_str("sink: {elasticsearch: {hosts: [\"http://127.0.0.1:9200\"]}}\n");
            }
            config.push_str(&block);
            let (run, _) = check_config(&config, &env);
            assert_eq!(
                run.code,
                Some(0),
                "the example at {name}:{line} is refused: {}\n{config}",
                run.stderr
            );
            checked.push(name.clone());
        }
    }
    for page in ["README.md", "docs/configuration.md"] {
        assert!(
            checked.iter().any(|name| name == page),
            "no yaml example found in {page}"
        );
    }
}

/// The ```yaml blocks of a Markdown text, with the line each starts on.
fn yaml_blocks(doc: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        match &mut open {
            None if line.trim() == "```yaml" => open = Some((i + 2, String::new())),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => blocks.extend(open.take()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(open.is_none(), "a ```yaml block is never closed");
    blocks
}

fn has_top_level_key(yaml: &str, key: &str) -> bool {
    yaml.lines().any(|line| {
        line.strip_prefix(key)
            .is_some_and(|rest| rest.starts_with(':'))
    })
}

#[test]
fn run_reports_an_unusable_checkpoint_file_with_its_path_and_reason() {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let checkpoints = data.join("checkpoints.json");
    std::fs::write(&checkpoints, br#"{"version":7}"#).expect("corrupt checkpoints");
    // A sink nobody listens on: the agent keeps running; it is killed below.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = format!(
        "data_dir: {data}\nsources:\n  - name: logs\n    include: [\"{logs}/*.log\"]\nsink:\n  elasticsearch:\n    hosts: [\"http://127.0.0.1:{port}\"]\n",
        data = data.display(),
        logs = dir.path().display(),
    );
    let path = write_config(&dir, &config);
    let mut child = Command::new(BIN)
        .args(["run", "--config", &path])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run logship");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut log = String::new();
    while !log.contains("checkpoint file unusable") && std::time::Instant::now() < deadline {
        if let Ok(chunk) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            log.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    // Let the rest of the line arrive before stopping the agent.
    std::thread::sleep(std::time::Duration::from_millis(300));
    while let Ok(chunk) = rx.try_recv() {
        log.push_str(&String::from_utf8_lossy(&chunk));
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = log
        .lines()
        .find(|l| l.contains("checkpoint file unusable"))
        .unwrap_or_else(|| panic!("no report of the unusable checkpoint file:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&checkpoints.display().to_string()),
        "names the file: {line}"
    );
    assert!(
        line.contains("unknown version 7"),
        "names the reason: {line}"
    );
    assert!(
        std::fs::read_dir(&data)
            .expect("data dir")
            .filter_map(Result::ok)
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with("checkpoints.json.corrupt-")),
        "the file was set aside"
    );
}
