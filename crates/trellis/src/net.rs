//! `trellis net cleanup`: removes every network namespace of this installation (its name
//! prefix, from the same configuration `trellis serve` reads) and nothing of another's. A
//! running server makes the VPC networks again on its next reconcile; instances are gone.

use trellis_net::{Netns, Network};

use crate::config::Config;

/// Removes the installation's namespaces; prints each one removed.
pub fn cleanup(config: &Config) -> anyhow::Result<()> {
    let naming = match &config.network {
        Network::Netns(naming) => naming.clone(),
        // The prefix is known in either mode; loopback mode simply made nothing.
        Network::Loopback => config.naming.clone(),
    };
    let netns = Netns::new(naming);
    let mut failed = 0;
    for name in netns.existing()? {
        match netns.remove(&name) {
            Ok(()) => println!("removed {name}"),
            Err(e) => {
                eprintln!("trellis: cannot remove {name}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} network namespace(s) could not be removed");
    }
    Ok(())
}
