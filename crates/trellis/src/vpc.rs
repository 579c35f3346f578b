//! `trellis vpc …`: facts about VPCs that the AWS APIs do not carry.

use crate::client::Client;

/// `trellis vpc ingress VPC_ID`: prints the VPC's ingress address (and says on stderr when low
/// ports are offset because the server does not run as root). Fails for a VPC with none.
pub async fn ingress(endpoint: &str, vpc: &str) -> anyhow::Result<()> {
    let client = Client::new(endpoint)?;
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
/// `TRELLIS_INSTANCE_ADDRESS`. Returns the command's exit status (128 + the signal's number if a
/// signal ended it). Ctrl-C goes to the command (the terminal sends it to both); SIGTERM is passed
/// on to it; either way this process waits for the command to end, then removes the instance.
pub async fn exec(endpoint: &str, vpc: &str, subnet: Option<&str>, command: &[String]) -> anyhow::Result<u8> {
    use std::os::unix::process::ExitStatusExt;

    let client = Client::new(endpoint)?;
    let body = serde_json::json!({ "subnetId": subnet, "ownerPid": std::process::id() });
    let instance = client.call("POST", &format!("/_trellis/vpcs/{vpc}/instances"), Some(body)).await?;
    let field = |name: &str| instance[name].as_str().unwrap_or_default().to_owned();
    let (id, netns, address) = (field("instanceId"), field("netns"), field("address"));
    let spawned = std::process::Command::new("ip")
        .args(["netns", "exec", &netns])
        .args(command)
        .env("TRELLIS_INSTANCE_ID", &id)
        .env("TRELLIS_INSTANCE_ADDRESS", &address)
        .spawn();
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
