//! `trellis vpc …`: facts about VPCs that the AWS APIs do not carry.

use crate::client::Client;

/// `trellis vpc ingress VPC_ID`: prints the VPC's ingress address (and says on stderr when low
/// ports are offset because the server does not run as root). Fails for a VPC with none.
pub async fn ingress(endpoint: &str, vpc: &str) -> anyhow::Result<()> {
    let client = Client::new(endpoint)?;
    let answer = client.call("GET", &format!("/_trellis/vpcs/{vpc}/ingress"), None).await?;
    let address = answer["address"].as_str().unwrap_or_default();
    println!("{address}");
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
