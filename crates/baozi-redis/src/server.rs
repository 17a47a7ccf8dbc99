//! [`LocalServer`]: a private `redis-server` for tests, examples and benchmarks.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The command that installs the server on Debian and Ubuntu.
pub const INSTALL_HINT: &str = "apt-get install redis-server";

/// A private `redis-server` on a free localhost port, without persistence (`--save ''
/// --appendonly no`), in a temporary directory; stopped (and the directory removed) on drop.
///
/// With the `tls` feature, `start_tls` starts one that speaks only TLS.
#[derive(Debug)]
pub struct LocalServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// TLS only, with a self-signed certificate in `dir`.
    tls: bool,
}

impl LocalServer {
    /// Whether `redis-server` can be started here (it is on `PATH`).
    pub fn available() -> bool {
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// For a test suite that needs a server: `true` when `redis-server` is here. Otherwise it
    /// prints one loud line naming the skipped `cases` and the install command, and returns
    /// `false` (the suite passes, skipped), unless the environment has `BAOZI_REQUIRE_REDIS=1`
    /// (CI), where it exits with code 1 instead.
    pub fn available_or_skip(suite: &str, cases: &[&str]) -> bool {
        if Self::available() {
            return true;
        }
        eprintln!(
            "\n!!! {suite}: SKIPPED {} Redis tests ({}): redis-server not found; install it with `{INSTALL_HINT}` !!!\n",
            cases.len(),
            cases.join("; ")
        );
        if std::env::var("BAOZI_REQUIRE_REDIS").is_ok_and(|v| v == "1") {
            eprintln!("BAOZI_REQUIRE_REDIS=1: the Redis tests must run here");
            std::process::exit(1);
        }
        println!("0 passed, 0 failed");
        false
    }

    /// Starts a server and waits until it answers.
    ///
    /// # Errors
    /// An I/O error if `redis-server` is missing (install it with [`INSTALL_HINT`]) or does not
    /// answer within 10 s.
    pub fn start() -> std::io::Result<LocalServer> {
        Self::start_with(false)
    }

    /// Starts a server that speaks only TLS (`--tls-port`), with a self-signed certificate for
    /// `localhost` and `127.0.0.1` made by the `openssl` command in the server's directory:
    /// [`url`](Self::url) is then `rediss://localhost:PORT/0` and [`ca_file`](Self::ca_file)
    /// the certificate a client must trust (`SSL_CERT_FILE`), or append `#insecure` to the URL
    /// to skip verification.
    ///
    /// # Errors
    /// As [`start`](Self::start), and an I/O error if `openssl` is missing (`apt-get install
    /// openssl`) or `redis-server` was built without TLS.
    #[cfg(feature = "tls")]
    pub fn start_tls() -> std::io::Result<LocalServer> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> std::io::Result<LocalServer> {
        // The free port may be taken by someone else between our probe and the server's bind:
        // then try another.
        let mut last = None;
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let dir =
                std::env::temp_dir().join(format!("baozi-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let mut s = LocalServer {
                child: None,
                port,
                dir,
                tls,
            };
            if tls {
                s.make_certificate()?;
            }
            match s.spawn() {
                Ok(()) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried at least once"))
    }

    /// A self-signed certificate (and its key) for localhost, in the server's directory.
    fn make_certificate(&self) -> std::io::Result<()> {
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            // A server certificate, not a CA's (rustls refuses a CA certificate as the server's).
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth"])
            .arg("-keyout")
            .arg(self.dir.join("key.pem"))
            .arg("-out")
            .arg(self.dir.join("cert.pem"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot run openssl to make a test certificate ({e}): apt-get install openssl"),
                )
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "openssl could not make a test certificate: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut cmd = Command::new("redis-server");
        if self.tls {
            let (cert, key) = (self.dir.join("cert.pem"), self.dir.join("key.pem"));
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&cert)
                .arg("--tls-key-file")
                .arg(&key)
                .arg("--tls-ca-cert-file")
                .arg(&cert)
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        // A TLS server is probed without checking its certificate (the probe only asks
        // whether it answers).
        let probe = if self.tls {
            format!("{}#insecure", self.url())
        } else {
            self.url()
        };
        let start = Instant::now();
        loop {
            if let Ok(client) = crate::link::open_client(probe.as_str()) {
                if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                    if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                        return Ok(());
                    }
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(std::io::Error::other(format!(
                    "redis-server exited at start ({status}); is port {} taken?",
                    self.port
                )));
            }
            if start.elapsed() > Duration::from_secs(10) {
                self.stop();
                return Err(std::io::Error::other(
                    "redis-server did not answer within 10 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT/0`, or `rediss://localhost:PORT/0` for a TLS server (the name
    /// its certificate is for).
    pub fn url(&self) -> String {
        if self.tls {
            format!("rediss://localhost:{}/0", self.port)
        } else {
            format!("redis://127.0.0.1:{}/0", self.port)
        }
    }

    /// The self-signed certificate a client of a TLS server must trust; `None` for a plain one.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.join("cert.pem"))
    }

    /// The server's process id while it runs (to freeze it with SIGSTOP in a test, say).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGKILL, as a crash would) and waits for it; [`restart`](Self::restart)
    /// starts it again on the same port. What it held is lost: it has no persistence.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
