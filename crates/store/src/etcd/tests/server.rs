//! A real etcd for tests: Debian's `etcd` on free loopback ports with a temporary data
//! directory, killed by PID when dropped (panics included). Restartable on the same data
//! directory and ports, to test what survives a restart. With [`EtcdServer::start_tls`] it
//! serves HTTPS with certificates made for it and asks clients for theirs.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::etcd::{EtcdConfig, EtcdStore, Scheme};

/// A running etcd owned by a test.
pub(crate) struct EtcdServer {
    child: Option<Child>,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    extra: Vec<String>,
    tls: bool,
}

impl EtcdServer {
    /// Starts an etcd, or says why not and returns `None` when no `etcd` binary is installed
    /// (`apt-get install etcd-server`; `scripts/test` installs it).
    pub(crate) async fn start(extra: &[&str]) -> Option<Self> {
        Self::start_with(extra, false).await
    }

    /// Starts an etcd serving HTTPS only, with a CA, a server certificate (for 127.0.0.1) and a
    /// client certificate in its directory (see [`EtcdServer::config`]); clients must present
    /// a certificate of that CA.
    pub(crate) async fn start_tls() -> Option<Self> {
        Self::start_with(&[], true).await
    }

    async fn start_with(extra: &[&str], tls: bool) -> Option<Self> {
        if !binary_exists() {
            eprintln!("skipped: no etcd binary on PATH (apt-get install etcd-server)");
            return None;
        }
        let (client_port, peer_port) = free_ports();
        let mut server = Self {
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            client_port,
            peer_port,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            tls,
        };
        if tls {
            make_certificates(server.dir.path());
            let file = |name: &str| server.dir.path().join(name).display().to_string();
            server.extra.extend([
                format!("--cert-file={}", file("server.pem")),
                format!("--key-file={}", file("server-key.pem")),
                format!("--trusted-ca-file={}", file("ca.pem")),
                "--client-cert-auth".to_owned(),
            ]);
        }
        server.spawn().await;
        Some(server)
    }

    /// `HOST:PORT` of its client URL.
    pub(crate) fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// A config reaching it without auth (over TLS, with the client certificate, if it
    /// serves TLS).
    pub(crate) fn config(&self) -> EtcdConfig {
        let config = EtcdConfig { endpoints: vec![self.endpoint()], ..EtcdConfig::default() };
        if !self.tls {
            return config;
        }
        let file = |name: &str| Some(self.dir.path().join(name));
        EtcdConfig {
            scheme: Scheme::Https,
            ca_file: file("ca.pem"),
            cert_file: file("client.pem"),
            key_file: file("client-key.pem"),
            ..config
        }
    }

    /// Kills it (SIGKILL, by PID) and waits for it to be gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same data directory and ports.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log file");
        let scheme = if self.tls { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            // A one-member cluster elects itself in milliseconds instead of a second.
            .args(["--heartbeat-interval=10", "--election-timeout=50"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log)
            .spawn()
            .expect("spawning etcd");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Waits (at most 20 s) until a linearizable read succeeds.
    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let config = self.config();
        loop {
            match EtcdStore::connect(&config).await {
                Ok(_) => return,
                // With auth on, a store without credentials is refused: etcd is up.
                Err(e) if e.to_string().contains("user name is empty") => return,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("etcd did not become ready within 20 s: {e}\n{}", self.log_tail())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("etcd exited with {status}\n{}", self.log_tail());
            }
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes `ca.pem`, `server.pem` and `server-key.pem` (for 127.0.0.1; also a client
/// certificate, since etcd's gateway presents it to etcd's own gRPC port), and `client.pem` and
/// `client-key.pem` into `dir`.
fn make_certificates(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    for (name, sans) in [("server", vec!["127.0.0.1".to_owned(), "localhost".to_owned()]), ("client", vec![])] {
        let mut params = CertificateParams::new(sans).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), params.signed_by(&key, &issuer).unwrap().pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    }
}

fn binary_exists() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir: PathBuf| dir.join("etcd").is_file())
}

/// Two free loopback ports (both held while the second is picked, so they differ).
fn free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("bound address").port();
    (port(&a), port(&b))
}
