//! Running one task's containers as processes: where each runs (the task's own network namespace
//! in netns mode, the host with an address of the task range in loopback mode), as which user
//! (unprivileged unless the container's `user` says otherwise), with which environment, where
//! its output goes, and how it is stopped (SIGTERM to its process group, SIGKILL after the stop
//! timeout). Owns no scheduling: the caller decides when a task starts and stops.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::images::Image;

/// Where a task's containers run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskNet {
    /// netns mode: inside the task's own namespace, at `address`.
    Netns {
        /// The namespace's name.
        netns: String,
        /// The task's address in its subnet.
        address: IpAddr,
    },
    /// loopback mode: on the host, at `address` (from the task range); container ports below
    /// 1024 are served at port + `low_port_offset`.
    Loopback {
        /// The task's address.
        address: IpAddr,
        /// Added to ports below 1024.
        low_port_offset: u16,
    },
}

/// What a container runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// A built-in image, run by the `trellis` binary.
    Builtin(Image),
    /// A host executable (`file:///path`).
    File(PathBuf),
}

/// One container to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Its name in the task definition.
    pub name: String,
    /// What it runs.
    pub program: Program,
    /// `entryPoint` of the definition (replaces the program when given).
    pub entry_point: Vec<String>,
    /// `command` of the definition (its arguments).
    pub command: Vec<String>,
    /// `environment`.
    pub environment: Vec<(String, String)>,
    /// `user` (`name`, `uid`, `uid:gid`, `name:group`); unprivileged when absent.
    pub user: Option<String>,
    /// Whether the task stops when it exits.
    pub essential: bool,
    /// Its container ports (the first is `PORT`).
    pub ports: Vec<u16>,
}

/// A task to run.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    /// The task's ARN.
    pub task_arn: String,
    /// Where its containers run.
    pub net: TaskNet,
    /// Its containers.
    pub containers: Vec<ContainerSpec>,
    /// Where its output goes: `<log_dir>/<container>.log`.
    pub log_dir: PathBuf,
    /// The `trellis` binary (it runs the built-in images).
    pub trellis: PathBuf,
}

/// A task's running containers. Each has a waiter task that reports its exit on a channel, so
/// exits are seen as they happen and signals go by process ID.
pub struct Running {
    containers: Vec<Proc>,
    exits: mpsc::UnboundedReceiver<(usize, ExitStatus)>,
}

struct Proc {
    name: String,
    essential: bool,
    pid: Option<rustix::process::Pid>,
    exit: Option<ExitStatus>,
}

/// How a container ended: its name and exit code (128 + the signal for a signal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The container's name.
    pub name: String,
    /// Its exit code.
    pub code: i32,
}

/// The user processes run as when a container names none.
const UNPRIVILEGED: (u32, u32) = (65534, 65534);

// === impl TaskNet ===

impl TaskNet {
    /// The task's address.
    pub fn address(&self) -> IpAddr {
        match self {
            TaskNet::Netns { address, .. } | TaskNet::Loopback { address, .. } => *address,
        }
    }

    /// The port that serves container port `port` (offset in loopback mode below 1024).
    pub fn real_port(&self, port: u16) -> u16 {
        match self {
            TaskNet::Loopback { low_port_offset, .. } if port < 1024 => port.saturating_add(*low_port_offset),
            _ => port,
        }
    }
}

// === impl Running ===

impl Running {
    /// Starts every container of `spec` (within a runtime). If one cannot start, those started
    /// are killed and the error says which container and why.
    pub fn start(spec: &TaskSpec) -> io::Result<Self> {
        std::fs::create_dir_all(&spec.log_dir)?;
        let (tx, exits) = mpsc::unbounded_channel();
        let mut running = Self { containers: Vec::with_capacity(spec.containers.len()), exits };
        for (i, c) in spec.containers.iter().enumerate() {
            let mut child = match spawn(spec, c) {
                Ok(child) => child,
                Err(e) => {
                    running.kill();
                    return Err(io::Error::new(e.kind(), format!("container {}: {e}", c.name)));
                }
            };
            let pid = child.id().and_then(|id| rustix::process::Pid::from_raw(i32::try_from(id).ok()?));
            let tx = tx.clone();
            tokio::spawn(async move {
                let status = child.wait().await.unwrap_or_else(|_| failed_status());
                let _ = tx.send((i, status));
            });
            running.containers.push(Proc { name: c.name.clone(), essential: c.essential, pid, exit: None });
        }
        Ok(running)
    }

    /// Waits until an essential container exits (or every container has); every exit seen so
    /// far, that one last.
    pub async fn essential_exit(&mut self) -> Vec<Exit> {
        while self.containers.iter().any(|p| p.exit.is_none()) {
            let Some(i) = self.next_exit().await else { break };
            if self.containers[i].essential {
                break;
            }
        }
        self.exits()
    }

    /// Stops the task: SIGTERM to every container's process group, then SIGKILL to what is still
    /// running after `timeout`. Every container's exit.
    pub async fn stop(mut self, timeout: Duration) -> Vec<Exit> {
        self.signal_all(rustix::process::Signal::TERM);
        let deadline = tokio::time::Instant::now() + timeout;
        while self.containers.iter().any(|p| p.exit.is_none()) {
            match tokio::time::timeout_at(deadline, self.next_exit()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    self.signal_all(rustix::process::Signal::KILL);
                    while self.containers.iter().any(|p| p.exit.is_none()) {
                        if self.next_exit().await.is_none() {
                            break;
                        }
                    }
                }
            }
        }
        self.exits()
    }

    /// Kills every container at once.
    pub fn kill(&mut self) {
        self.signal_all(rustix::process::Signal::KILL);
    }

    /// The process IDs of the running containers.
    pub fn pids(&self) -> Vec<i32> {
        self.containers
            .iter()
            .filter(|p| p.exit.is_none())
            .filter_map(|p| Some(p.pid?.as_raw_nonzero().get()))
            .collect()
    }

    /// Records the next exit; which container it was.
    async fn next_exit(&mut self) -> Option<usize> {
        let (i, status) = self.exits.recv().await?;
        self.containers[i].exit = Some(status);
        Some(i)
    }

    fn signal_all(&self, signal: rustix::process::Signal) {
        for pid in self.containers.iter().filter(|p| p.exit.is_none()).filter_map(|p| p.pid) {
            // The container is its own process group: whatever it started goes too.
            if rustix::process::kill_process_group(pid, signal).is_err() {
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
    }

    fn exits(&self) -> Vec<Exit> {
        self.containers.iter().filter_map(|p| Some(Exit { name: p.name.clone(), code: exit_code(p.exit?) })).collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A task dropped without being stopped must not leave processes behind.
        self.kill();
    }
}

/// Starts one container.
fn spawn(spec: &TaskSpec, c: &ContainerSpec) -> io::Result<Child> {
    let (program, args) = program_and_args(spec, c);
    let (uid, gid) = user_ids(c.user.as_deref())?;
    let root = rustix::process::geteuid().is_root();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path(&spec.log_dir, &c.name))?;
    // util-linux's setpriv, exec'd on the way: the container is killed if the server dies
    // (a task does not outlive its server, even one killed outright), and runs as its user.
    let mut setpriv = vec!["setpriv".to_owned(), "--pdeathsig=KILL".to_owned()];
    // Without root the processes run as the server's own user.
    if root && uid != 0 {
        setpriv.extend([format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".to_owned()]);
    }
    setpriv.push("--".to_owned());
    let mut cmd = match &spec.net {
        TaskNet::Netns { netns, .. } => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", netns]);
            cmd.args(&setpriv);
            cmd
        }
        TaskNet::Loopback { .. } => {
            let mut cmd = Command::new(&setpriv[0]);
            cmd.args(&setpriv[1..]);
            cmd
        }
    };
    cmd.arg(&program).args(&args);
    let port = c.ports.first().map(|&p| spec.net.real_port(p));
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(c.environment.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("HOST", spec.net.address().to_string())
        .env("TRELLIS_TASK_ARN", &spec.task_arn)
        .env("TRELLIS_TASK_ADDRESS", spec.net.address().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .process_group(0);
    if let Some(port) = port {
        cmd.env("PORT", port.to_string());
    }
    if uid != 0 {
        cmd.env("HOME", "/");
    }
    cmd.spawn()
}

/// The program a container runs and its arguments: a built-in image runs `trellis image
/// <name>`; a file runs with `command` as its arguments, unless `entryPoint` replaces it.
fn program_and_args(spec: &TaskSpec, c: &ContainerSpec) -> (PathBuf, Vec<String>) {
    if let Some((first, rest)) = c.entry_point.split_first() {
        return (PathBuf::from(first), rest.iter().chain(&c.command).cloned().collect());
    }
    match &c.program {
        Program::Builtin(image) => (spec.trellis.clone(), vec!["image".into(), image.cli_name().into()]),
        Program::File(path) => (path.clone(), c.command.clone()),
    }
}

/// The user and group IDs for `user` (ECS's forms: `name`, `uid`, `uid:gid`, `name:group`);
/// unprivileged when `None`.
pub fn user_ids(user: Option<&str>) -> io::Result<(u32, u32)> {
    let Some(user) = user else { return Ok(UNPRIVILEGED) };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (uid, lookup(&passwd, |f| f.get(2) == Some(&u)).and_then(|f| f.get(3)?.parse().ok())),
        Err(_) => {
            let fields = lookup(&passwd, |f| f.first() == Some(&u))
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no user {u:?} on this host")))?;
            let uid = fields.get(2).and_then(|v| v.parse().ok()).unwrap_or(UNPRIVILEGED.0);
            (uid, fields.get(3).and_then(|v| v.parse().ok()))
        }
    };
    let gid = match g {
        None => primary.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
                lookup(&groups, |f| f.first() == Some(&g))
                    .and_then(|f| f.get(2)?.parse().ok())
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no group {g:?} on this host")))?
            }
        },
    };
    Ok((uid, gid))
}

/// The fields of the first `:`-separated line of `table` that `matches`.
fn lookup(table: &str, matches: impl Fn(&[&str]) -> bool) -> Option<Vec<&str>> {
    table.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| matches(f))
}

/// Where a container's output goes.
pub fn log_path(log_dir: &Path, container: &str) -> PathBuf {
    log_dir.join(format!("{container}.log"))
}

/// An exit code as ECS shows it: the code, or 128 + the signal that ended the process.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1)
}

fn failed_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(255 << 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, containers: Vec<ContainerSpec>) -> TaskSpec {
        TaskSpec {
            task_arn: "arn:aws:ecs:us-east-1:000000000000:task/c/0123".into(),
            net: TaskNet::Loopback { address: "127.0.0.1".parse().unwrap(), low_port_offset: 10000 },
            containers,
            log_dir: dir.to_path_buf(),
            trellis: PathBuf::from("/bin/false"),
        }
    }

    fn shell(name: &str, script: &str, essential: bool) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            program: Program::File("/bin/sh".into()),
            entry_point: Vec::new(),
            command: vec!["-c".into(), script.into()],
            environment: vec![("GREETING".into(), "hi".into())],
            user: None,
            essential,
            ports: vec![80],
        }
    }

    #[tokio::test]
    async fn an_essential_exit_ends_the_task_with_its_code_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(
            dir.path(),
            vec![shell("side", "sleep 30", false), shell("main", "echo $GREETING $HOST $PORT; exit 3", true)],
        );
        let mut running = Running::start(&s).unwrap();
        let exits = running.essential_exit().await;
        assert_eq!(exits, vec![Exit { name: "main".into(), code: 3 }]);
        let stopped = running.stop(Duration::from_secs(5)).await;
        assert!(stopped.contains(&Exit { name: "side".into(), code: 128 + 15 }), "{stopped:?}");
        let log = std::fs::read_to_string(log_path(dir.path(), "main")).unwrap();
        assert_eq!(log, "hi 127.0.0.1 10080\n");
    }

    #[tokio::test]
    async fn a_container_that_ignores_sigterm_is_killed_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), vec![shell("stubborn", "trap '' TERM; sleep 30 & wait; sleep 30", true)]);
        let running = Running::start(&s).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let exits = running.stop(Duration::from_millis(300)).await;
        assert_eq!(exits, vec![Exit { name: "stubborn".into(), code: 128 + 9 }]);
    }

    #[test]
    fn users() {
        assert_eq!(user_ids(None).unwrap(), UNPRIVILEGED);
        assert_eq!(user_ids(Some("0")).unwrap(), (0, 0));
        assert_eq!(user_ids(Some("root")).unwrap(), (0, 0));
        assert_eq!(user_ids(Some("1234:5678")).unwrap(), (1234, 5678));
        assert_eq!(user_ids(Some("nobody")).unwrap().0, 65534);
        assert!(user_ids(Some("no-such-user-here")).is_err());
    }
}
