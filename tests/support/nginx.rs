//! Debian's nginx as a TLS-terminating, authenticating proxy in front of the
//! test Elasticsearch, the way production clusters are often exposed.
//!
//! [`Pki::new`] makes, with the `openssl` CLI, a test CA, a server
//! certificate for `127.0.0.1`/`localhost` signed by it, an *expired* server
//! certificate from the same CA, and a second, unrelated CA (the "wrong CA").
//! [`Nginx::start`] runs nginx as a child of the test (its own prefix dir,
//! config, pid and logs in a temp dir; `daemon off`, `master_process off`)
//! listening on three free loopback ports, all proxying to `upstream`:
//!
//! - `basic_url`: valid certificate, HTTP basic auth (htpasswd, `apr1`);
//! - `api_key_url`: valid certificate, `Authorization: ApiKey <API_KEY>`;
//! - `expired_url`: the expired certificate, basic auth;
//! - `client_cert_url`: valid certificate, a client certificate signed by
//!   the test CA required (403 without one);
//! - `small_body_url`: valid certificate, basic auth, and
//!   `client_max_body_size` [`SMALL_BODY_BYTES`]: a larger request body is
//!   answered 413 by nginx itself, before it is read.
//!
//! nginx is killed when the [`Nginx`] is dropped and, should the test
//! process die, by `PR_SET_PDEATHSIG`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USERNAME: &str = "shipper";
pub const PASSWORD: &str = "correct horse battery staple";
/// The encoded API key nginx accepts (what Elasticsearch's `encoded` is).
pub const API_KEY: &str = "bG9nc2hpcDp0ZXN0LWFwaS1rZXk=";

const NGINX: &str = "/usr/sbin/nginx";

/// `client_max_body_size` of `small_body_url`, in bytes.
pub const SMALL_BODY_BYTES: usize = 32 << 10;

/// Test certificates, in a temp dir.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("logship-pki-")
            .tempdir()
            .expect("temp dir");
        let pki = Pki { dir };
        pki.make_ca("ca", "logship test CA");
        pki.make_ca("wrong-ca", "an unrelated CA");
        pki.make_server("server", None);
        pki.make_server("expired", Some(("20200101000000Z", "20200201000000Z")));
        pki.make_leaf("client", None, "clientAuth");
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// The CA that signed both server certificates.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }
    pub fn wrong_ca(&self) -> PathBuf {
        self.path("wrong-ca.pem")
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn make_ca(&self, name: &str, cn: &str) {
        let key = format!("{name}.key");
        let pem = format!("{name}.pem");
        self.openssl(&[
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "3",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        // `openssl ca` state for this CA.
        std::fs::write(self.path(&format!("{name}.index")), "").expect("write");
        std::fs::write(self.path(&format!("{name}.serial")), "1000\n").expect("write");
        std::fs::write(
            self.path(&format!("{name}.cnf")),
            format!(
                "[ca]\ndefault_ca = this\n[this]\ndatabase = {name}.index\nnew_certs_dir = .\n\
                 serial = {name}.serial\ndefault_md = sha256\npolicy = any\n\
                 copy_extensions = copy\nunique_subject = no\n[any]\ncommonName = supplied\n"
            ),
        )
        .expect("write");
    }

    /// A server certificate signed by `ca`, valid now or in `window`.
    fn make_server(&self, name: &str, window: Option<(&str, &str)>) {
        self.make_leaf(name, window, "serverAuth")
    }

    /// A certificate for `127.0.0.1`/`localhost` signed by `ca`, for `eku`.
    fn make_leaf(&self, name: &str, window: Option<(&str, &str)>, eku: &str) {
        let eku = format!("extendedKeyUsage={eku}");
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            &eku,
        ]);
        let pem = format!("{name}.pem");
        let mut args = vec![
            "ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile",
            "ca.key", "-in", &csr, "-out", &pem,
        ];
        match window {
            Some((start, end)) => args.extend(["-startdate", start, "-enddate", end]),
            None => args.extend(["-days", "2"]),
        }
        self.openssl(&args);
    }
}

/// A running nginx.
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    pub basic_url: String,
    pub api_key_url: String,
    pub expired_url: String,
    /// Valid certificate; requires a client certificate signed by the CA.
    pub client_cert_url: String,
    /// Valid certificate, basic auth, bodies over [`SMALL_BODY_BYTES`] refused.
    pub small_body_url: String,
}

/// Whether Debian's nginx is installed (`scripts/test.sh` installs `nginx-light`).
pub fn available() -> bool {
    Path::new(NGINX).exists()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

impl Nginx {
    /// nginx in front of `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(pki: &Pki, upstream: &str) -> Nginx {
        let dir = tempfile::Builder::new()
            .prefix("logship-nginx-")
            .tempdir()
            .expect("temp dir");
        let out = Command::new("openssl")
            .args(["passwd", "-apr1", PASSWORD])
            .output()
            .expect("openssl passwd");
        assert!(out.status.success());
        let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
        std::fs::write(dir.path().join("htpasswd"), format!("{USERNAME}:{hash}\n"))
            .expect("write htpasswd");
        std::fs::create_dir(dir.path().join("logs")).expect("mkdir");
        let upstream = upstream.trim_start_matches("http://");
        let (basic, api_key, expired) = (free_port(), free_port(), free_port());
        let client_cert = free_port();
        let small_body = free_port();
        let server = |port: u16, cert: &str, check: &str| {
            format!(
                r#"
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert_pem};
        ssl_certificate_key {cert_key};
        location / {{
            {check}
            proxy_pass http://es;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
        }}
    }}"#,
                cert_pem = pki.path(&format!("{cert}.pem")).display(),
                cert_key = pki.path(&format!("{cert}.key")).display(),
            )
        };
        let htpasswd = dir.path().join("htpasswd");
        let basic_check = format!(
            "auth_basic \"logship test\"; auth_basic_user_file {};",
            htpasswd.display()
        );
        let api_key_check =
            format!("if ($http_authorization != \"ApiKey {API_KEY}\") {{ return 401; }}");
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log {log} info;
events {{ worker_connections 64; }}
http {{
    access_log {access};
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 100m;
    upstream es {{ server {upstream}; keepalive 4; }}
{a}
{b}
{c}
{d}
{e}
}}
"#,
            pid = dir.path().join("nginx.pid").display(),
            log = dir.path().join("logs/error.log").display(),
            access = dir.path().join("logs/access.log").display(),
            tmp = dir.path().display(),
            a = server(basic, "server", &basic_check),
            b = server(api_key, "server", &api_key_check),
            c = server(expired, "expired", &basic_check),
            d = server(
                client_cert,
                "server",
                "if ($ssl_client_verify != SUCCESS) { return 403; }",
            )
            .replace(
                "ssl_certificate ",
                &format!(
                    "ssl_client_certificate {};\n        ssl_verify_client optional;\n        ssl_certificate ",
                    pki.ca().display()
                ),
            ),
            e = server(
                small_body,
                "server",
                &format!("{basic_check}\n            client_max_body_size {SMALL_BODY_BYTES};"),
            ),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let mut command = Command::new(NGINX);
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start nginx");
        let nginx = Nginx {
            child,
            dir,
            basic_url: format!("https://127.0.0.1:{basic}"),
            api_key_url: format!("https://127.0.0.1:{api_key}"),
            expired_url: format!("https://127.0.0.1:{expired}"),
            client_cert_url: format!("https://127.0.0.1:{client_cert}"),
            small_body_url: format!("https://127.0.0.1:{small_body}"),
        };
        nginx.wait_listening(&[basic, api_key, expired, client_cert, small_body]);
        nginx
    }

    fn wait_listening(&self, ports: &[u16]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for &port in ports {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "nginx did not listen on {port}: {}",
                    self.error_log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
