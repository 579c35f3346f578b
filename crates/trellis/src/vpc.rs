//! `trellis vpc …`: facts about VPCs that the AWS APIs do not carry.

use crate::client::Client;

/// `trellis vpc ingress VPC_ID`: prints the VPC's ingress address (and says on stderr when low
/// ports are offset because the server does not run as root). Fails for a VPC with none.
pub async fn ingress(client: &Client, vpc: &str) -> anyhow::Result<()> {
    let answer = client.call("GET", &format!("/_trellis/vpcs/{vpc}/ingress"), None).await?;
    let address = answer["address"].as_str().unwrap_or_default();
    println!("{address}");
    if answer["network"] == "netns" {
        eprintln!(
            "note: netns mode: this address is inside the VPC's own network; reach it from there, e.g. \
             `trellis vpc exec {vpc} -- curl http://<service name>/`"
        );
    }
    let offset = answer["lowPortOffset"].as_u64().unwrap_or(0);
    if offset > 0 {
        eprintln!(
            "note: the server does not run as root, so Lattice ports below 1024 are served at port + {offset} \
             (HTTP 80 at {}) and DNS at {address}:{}",
            80 + offset,
            53 + offset
        );
    }
    Ok(())
}

/// `trellis vpc exec VPC_ID [--subnet SUBNET_ID] -- CMD ARGS…` (netns mode): asks the server for
/// an instance in the VPC, runs the command inside it with this terminal's standard streams, and
/// removes the instance when the command exits. The command sees `TRELLIS_INSTANCE_ID` and
/// `TRELLIS_INSTANCE_ADDRESS`, and trusts the installation's certificate authority besides the
/// system's (see [`TrustBundle`]). Returns the command's exit status (128 + the signal's number if a
/// signal ended it). Ctrl-C goes to the command (the terminal sends it to both); SIGTERM is passed
/// on to it; either way this process waits for the command to end, then removes the instance.
pub async fn exec(client: &Client, vpc: &str, subnet: Option<&str>, command: &[String]) -> anyhow::Result<u8> {
    use std::os::unix::process::ExitStatusExt;

    let body = serde_json::json!({ "subnetId": subnet, "ownerPid": std::process::id() });
    let instance = client.call("POST", &format!("/_trellis/vpcs/{vpc}/instances"), Some(body)).await?;
    let field = |name: &str| instance[name].as_str().unwrap_or_default().to_owned();
    let (id, netns, address) = (field("instanceId"), field("netns"), field("address"));
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &netns])
        .args(command)
        .env("TRELLIS_INSTANCE_ID", &id)
        .env("TRELLIS_INSTANCE_ADDRESS", &address);
    let trust = match client.text("GET", "/_trellis/ca").await {
        Ok(pem) => TrustBundle::write(&pem, &id)
            .inspect_err(|e| eprintln!("trellis: the command will not trust the Trellis CA: {e:#}"))
            .ok(),
        Err(e) => {
            eprintln!("trellis: the command will not trust the Trellis CA: {e:#}");
            None
        }
    };
    if let Some(trust) = &trust {
        trust.apply(&mut cmd);
    }
    let spawned = cmd.spawn();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let status = match spawned {
        Ok(mut child) => {
            let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
            let mut wait = tokio::task::spawn_blocking(move || child.wait());
            loop {
                tokio::select! {
                    status = &mut wait => break status.map_err(anyhow::Error::from).and_then(|s| Ok(s?)),
                    // The terminal sent it to the command as well: wait for the command.
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {
                        if let Some(pid) = pid {
                            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                        }
                    }
                }
            }
        }
        Err(e) => Err(anyhow::Error::from(e).context("running `ip netns exec` (is iproute2 installed?)")),
    };
    if let Err(e) = client.call("DELETE", &format!("/_trellis/instances/{id}"), None).await {
        eprintln!("trellis: could not remove instance {id} (the server removes it soon): {e:#}");
    }
    let status = status?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(u8::MAX),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(u8::MAX),
        (None, None) => u8::MAX,
    })
}

/// Files with trusted certificates plus the installation's certificate authority, for one
/// `vpc exec` command, removed when dropped. Commands find them through the variables OpenSSL,
/// curl, Python's requests, the AWS CLI and SDKs, Node and gRPC read: a variable the caller set
/// points at a copy of the file it named with the CA added; an unset one at a copy of the
/// system's bundle with the CA added.
pub struct TrustBundle {
    files: Vec<std::path::PathBuf>,
    env: Vec<(&'static str, std::path::PathBuf)>,
}

/// Where Debian keeps the system's trusted certificates.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Variables that name a file of trusted certificates. Node's `NODE_EXTRA_CA_CERTS` adds to its
/// own roots; the others replace the system's.
const BUNDLE_VARIABLES: &[&str] = &[
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "AWS_CA_BUNDLE",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    "NODE_EXTRA_CA_CERTS",
];

impl TrustBundle {
    /// Writes the bundles for the command of instance `id`.
    pub fn write(ca_pem: &str, id: &str) -> anyhow::Result<Self> {
        let mut bundle = Self { files: Vec::new(), env: Vec::new() };
        let mut made: Vec<(std::path::PathBuf, std::path::PathBuf)> = Vec::new();
        for &var in BUNDLE_VARIABLES {
            let source = std::env::var_os(var).map_or_else(|| SYSTEM_BUNDLE.into(), std::path::PathBuf::from);
            let path = match made.iter().find(|(s, _)| *s == source) {
                Some((_, path)) => path.clone(),
                None => {
                    let path =
                        std::env::temp_dir().join(format!("trellis-ca-{}-{id}-{}.pem", std::process::id(), made.len()));
                    bundle.files.push(path.clone());
                    write_bundle(&path, &source, ca_pem)?;
                    made.push((source, path.clone()));
                    path
                }
            };
            bundle.env.push((var, path));
        }
        Ok(bundle)
    }

    /// Points `cmd` at the bundles.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        for (var, path) in &self.env {
            cmd.env(var, path);
        }
    }
}

/// `source`'s certificates (none if it cannot be read) and the CA, in a fresh file at `path`.
fn write_bundle(path: &std::path::Path, source: &std::path::Path, ca_pem: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut text = std::fs::read_to_string(source).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(ca_pem);
    // A fresh file, never one someone placed there first.
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

impl TrustBundle {
    /// Removes the bundles `trellis vpc exec` (process `pid`) wrote for instance `id`: what it
    /// would have removed itself, had it not been killed outright. The server calls it when it
    /// reaps the instance of an owner that died (both on one machine, with one temp directory).
    pub fn remove_left_by(pid: u32, id: &str) {
        let prefix = format!("trellis-ca-{pid}-{id}-");
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".pem") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl Drop for TrustBundle {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}
