//! The real binary as a user runs it: signals, log formats, configuration errors, the schema
//! guard and `trellis status`.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn trellis() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trellis"));
    c.env_remove("TRELLIS_ENDPOINT").env("TRELLIS_LOG", "info");
    c
}

/// `trellis serve` in loopback mode: pinned, since as root the default is netns mode, which
/// these tests are not about (and which would leave namespaces behind).
fn serve(data: &std::path::Path, port: u16, extra: &[&str]) -> Proc {
    let child = trellis()
        .args(["serve", "--network", "loopback", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let proc = Proc { child };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "trellis did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    proc
}

fn wait_exit(proc: &mut Proc) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = proc.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "trellis did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(proc: &Proc, sig: &str) {
    let ok = Command::new("kill").args([sig, &proc.child.id().to_string()]).status().unwrap().success();
    assert!(ok);
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly() {
    for sig in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir().unwrap();
        let mut proc = serve(&dir.path().join("data"), free_port(), &[]);
        signal(&proc, sig);
        assert!(wait_exit(&mut proc).success(), "{sig}");
        let mut err = String::new();
        proc.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(err.contains("stopped"), "{err}");
    }
}

#[test]
fn json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = serve(&dir.path().join("data"), free_port(), &["--log-format", "json"]);
    signal(&proc, "-TERM");
    wait_exit(&mut proc);
    let mut err = String::new();
    proc.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    // Every line is a JSON object; one of them says where the server listens (other parts may
    // log before it).
    let lines: Vec<serde_json::Value> = err.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let listening = lines.iter().any(|l| l["fields"]["message"].as_str().is_some_and(|m| m.contains("listening")));
    assert!(listening, "{err}");
}

#[test]
fn bad_configuration_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nno_such_setting = 1\n").unwrap();
    let out = trellis().args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_setting"), "{err}");
    let out =
        trellis().args(["serve", "--listen", "not-an-address"]).arg("--data-dir").arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_newer_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut proc = serve(&data, port, &[]);
    signal(&proc, "-TERM");
    wait_exit(&mut proc);
    // Pretend a future Trellis wrote this data directory.
    let ok = Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"update meta set value=99 where name='schema_version'\"); c.commit()"])
        .arg(data.join("store.db"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let out = trellis()
        .args(["serve", "--network", "loopback", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("schema version 99"), "{err}");
}

#[test]
fn status_prints_tables() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _proc = serve(&dir.path().join("data"), port, &[]);
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = trellis().args(["status", "--endpoint", &endpoint]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for title in ["SERVICE NETWORKS", "SERVICES", "TARGET GROUPS", "TARGETS"] {
        assert!(text.contains(title), "{text}");
    }
    // The endpoint also comes from TRELLIS_ENDPOINT; a dead one is a clear error.
    let out = trellis().arg("status").env("TRELLIS_ENDPOINT", "http://127.0.0.1:9").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach Trellis"));
}
