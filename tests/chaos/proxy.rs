//! A loopback TCP proxy between the agent and the shared Elasticsearch node,
//! which the schedule uses to see bulk requests in flight, to hold their
//! answers back (a slow cluster), and to make Elasticsearch unreachable
//! (the listening socket is closed, so connections are refused, and open
//! connections are cut) without touching the node other tests share.
//!
//! A request is recognised by the first bytes a client sends after its
//! previous answer (`POST …/_bulk`); its answer by the first bytes the
//! server sends back (`HTTP/1.`). The agent's client neither pipelines nor
//! sends a request before the previous answer, so every request starts a
//! read on its connection.

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    target: String,
    up: AtomicBool,
    stop: AtomicBool,
    /// Answers to bulk requests are held until this long after the request.
    delay_ms: AtomicU64,
    next_id: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Open connections (both sides), cut when the proxy goes down.
    conns: Vec<TcpStream>,
    /// Per connection: the bulk request awaiting its answer and when it was sent.
    in_flight: HashMap<u64, (u64, Instant)>,
    answered: HashSet<u64>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Proxy {
    /// Starts a proxy to `upstream` (`http://host:port`), up.
    pub fn start(upstream: &str) -> Proxy {
        let target = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            target,
            up: AtomicBool::new(true),
            ..Shared::default()
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(listener, port, &shared))
        };
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Up: connections are accepted and forwarded. Down: the port is
    /// closed (connections refused) and open connections are cut.
    pub fn set_up(&self, up: bool) {
        self.shared.up.store(up, Ordering::SeqCst);
        if !up {
            let mut st = self.shared.state();
            for c in st.conns.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
            st.in_flight.clear();
        }
    }

    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::SeqCst)
    }

    /// Holds every bulk answer until `delay` after its request was sent.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.shared.delay_ms.load(Ordering::SeqCst))
    }

    /// The oldest bulk request sent and not answered: (id, age).
    pub fn oldest_in_flight(&self) -> Option<(u64, Duration)> {
        self.shared
            .state()
            .in_flight
            .values()
            .min_by_key(|(_, at)| *at)
            .map(|(id, at)| (*id, at.elapsed()))
    }

    /// Whether the answer to bulk request `id` was passed to the agent.
    pub fn was_answered(&self, id: u64) -> bool {
        self.shared.state().answered.contains(&id)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.set_up(false);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn accept_loop(first: TcpListener, port: u16, shared: &Arc<Shared>) {
    first.set_nonblocking(true).expect("nonblocking listener");
    let mut listener = Some(first);
    while !shared.stop.load(Ordering::SeqCst) {
        if !shared.up.load(Ordering::SeqCst) {
            // Closing the socket makes connects fail with ECONNREFUSED.
            listener = None;
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        if listener.is_none() {
            // std sets SO_REUSEADDR, so the port can be bound again at once.
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => {
                    l.set_nonblocking(true).expect("nonblocking listener");
                    listener = Some(l);
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            }
        }
        let Some(l) = &listener else { continue };
        match l.accept() {
            Ok((client, _)) => connect(client, shared),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn connect(client: TcpStream, shared: &Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    let Ok(addr) = shared.target.parse() else {
        return;
    };
    let Ok(server) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut st = shared.state();
        if !shared.up.load(Ordering::SeqCst) {
            return;
        }
        st.conns.push(c2);
        st.conns.push(s2);
    }
    let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = shared.clone();
    std::thread::spawn(move || requests(id, client, server, &up));
    let down = shared.clone();
    std::thread::spawn(move || answers(id, s3, c3, &down));
}

/// Client to server: notes each bulk request as it starts.
fn requests(conn: u64, mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if chunk.starts_with(b"POST ") {
            let line_end = memchr::memchr(b'\n', chunk).unwrap_or(chunk.len());
            if memchr::memmem::find(&chunk[..line_end], b"/_bulk").is_some() {
                let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
                shared.state().in_flight.insert(conn, (id, Instant::now()));
            }
        }
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Server to client: holds a bulk answer back for the configured delay.
fn answers(conn: u64, mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let pending = shared.state().in_flight.get(&conn).copied();
        if let Some((id, sent)) = pending {
            // Read each time: raising the delay freezes answers held now
            // (`kill9_inflight` does, so that the kill lands first).
            while sent.elapsed() < Duration::from_millis(shared.delay_ms.load(Ordering::SeqCst))
                && shared.up.load(Ordering::SeqCst)
                && !shared.stop.load(Ordering::SeqCst)
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            if to.write_all(chunk).is_err() {
                break;
            }
            if chunk.starts_with(b"HTTP/1.") {
                let mut st = shared.state();
                st.in_flight.remove(&conn);
                st.answered.insert(id);
            }
            continue;
        }
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    shared.state().in_flight.remove(&conn);
    let _ = to.shutdown(Shutdown::Write);
}
