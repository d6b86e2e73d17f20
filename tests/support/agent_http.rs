//! The agent's HTTP endpoints from a test: a free loopback port to give it,
//! a plain `GET`, and `/metrics` parsed with `prometheus-parse` (so a
//! malformed exposition fails the test).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::logship::Agent;

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `GET path` on the agent's HTTP port: (status, body). `None` if not connectable.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// `GET path`, retried for up to 20 s until the agent answers; fails at once
/// (with its stderr) if the agent exits.
pub fn wait_get(port: u16, path: &str, agent: &mut Agent) -> (u16, String) {
    let started = std::time::Instant::now();
    loop {
        agent.assert_running();
        if let Some(r) = get(port, path) {
            return r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{path} never answered:\n{}",
            agent.stderr_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A parsed scrape; panics on a malformed exposition.
pub fn scrape(port: u16, agent: &mut Agent) -> prometheus_parse::Scrape {
    let (status, body) = wait_get(port, "/metrics", agent);
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("malformed exposition: {e}\n{body}"))
}

/// The value of the first sample of `name` carrying all of `labels`.
pub fn value(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}
