//! netns mode: every VPC is a network namespace of its own, and every instance (a command run
//! with `trellis vpc exec`, later a task) a namespace attached to one of its subnets.
//!
//! The layout of one VPC:
//! - the VPC's namespace is its router: one bridge per subnet, holding the subnet's gateway
//!   address (the block's base + 1, as AWS's VPC router); forwarding on, so subnets reach each
//!   other; on its loopback device the VPC's DNS address (the VPC block's base + 2, as AWS) and,
//!   while the VPC is associated with a service network, [`LINK_LOCAL`], where the proxy answers;
//! - an instance's namespace has `eth0`, one end of a veth pair whose other end is a port of its
//!   subnet's bridge, an address of the subnet, a default route through the gateway, and a
//!   `resolv.conf` (under `/etc/netns/<name>/`, which `ip netns exec` mounts) naming the DNS
//!   address.
//!
//! Nothing routes between VPCs or from a VPC to the host: the namespaces share no link. Links live
//! only inside namespaces, so only the namespaces' names are visible on the host, and those carry
//! the installation's prefix ([`Naming`]).
//!
//! The work is done with iproute2's `ip`, the reference tool for exactly this, run as a child
//! process; nothing here is on a request's path. Every step is idempotent, so applying a VPC's
//! layout again repairs whatever is missing.

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use trellis_model::cidr::Cidr;

/// Where Lattice answers inside an associated VPC (spec: services resolve into 169.254.171.0/24).
pub const LINK_LOCAL: Ipv4Addr = Ipv4Addr::new(169, 254, 171, 1);

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Where `ip netns exec` finds per-namespace files such as `resolv.conf`.
const ETC_NETNS: &str = "/etc/netns";
/// Names of subnet bridges inside a VPC's namespace start with this.
const BRIDGE_PREFIX: &str = "sub";

/// The names an installation gives what it creates: `<prefix>-<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Naming {
    prefix: String,
}

/// Why a network could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The prefix is not usable in names.
    #[error("name prefix {0:?} must be 1 to 16 lowercase letters and digits")]
    BadPrefix(String),
    /// netns mode cannot run here.
    #[error("netns mode needs {0}")]
    Unprivileged(String),
    /// A command failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed, or why it could not run.
        message: String,
    },
    /// A file could not be written or read.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What one VPC's network must look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VpcLayout {
    /// `vpc-…`.
    pub vpc_id: String,
    /// The VPC's primary block.
    pub cidr: Cidr,
    /// Its subnets: ID and block.
    pub subnets: Vec<(String, Cidr)>,
    /// Whether Lattice answers inside it (it is associated with a service network).
    pub lattice: bool,
}

/// One instance to attach to a subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceLayout {
    /// `i-…`.
    pub instance_id: String,
    /// The VPC.
    pub vpc_id: String,
    /// The subnet and its block.
    pub subnet_id: String,
    /// The subnet's block.
    pub subnet_cidr: Cidr,
    /// The instance's address (inside the subnet's block).
    pub address: Ipv4Addr,
    /// The VPC's DNS address.
    pub dns: Ipv4Addr,
}

/// The network namespaces of one installation.
#[derive(Clone, Debug)]
pub struct Netns {
    naming: Naming,
}

// === impl Naming ===

impl Naming {
    /// Names starting with `prefix-`.
    pub fn new(prefix: &str) -> Result<Self, NetnsError> {
        let ok =
            (1..=16).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok {
            return Err(NetnsError::BadPrefix(prefix.to_owned()));
        }
        Ok(Self { prefix: prefix.to_owned() })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace of VPC `vpc_id` (its router).
    pub fn vpc(&self, vpc_id: &str) -> String {
        format!("{}-{vpc_id}", self.prefix)
    }

    /// The namespace of instance `instance_id`.
    pub fn instance(&self, instance_id: &str) -> String {
        format!("{}-{instance_id}", self.prefix)
    }

    /// Whether `name` is one of this installation's names.
    pub fn owns(&self, name: &str) -> bool {
        name.strip_prefix(&self.prefix).is_some_and(|rest| rest.starts_with('-'))
    }
}

// === impl Netns ===

impl Netns {
    /// The namespaces named by `naming`.
    pub fn new(naming: Naming) -> Self {
        Self { naming }
    }

    /// The naming in use.
    pub fn naming(&self) -> &Naming {
        &self.naming
    }

    /// Checks that this process can make networks: it runs as root, `ip` is there, and a
    /// namespace can be created and removed. The error says what is missing.
    pub fn check_privileges(&self) -> Result<(), NetnsError> {
        if !rustix::process::geteuid().is_root() {
            return Err(NetnsError::Unprivileged(
                "root (network namespaces are created with CAP_SYS_ADMIN and CAP_NET_ADMIN); run as root, or use --network loopback".into(),
            ));
        }
        if let Err(e) = Command::new("ip").arg("-V").output() {
            return Err(NetnsError::Unprivileged(format!(
                "iproute2's `ip` command ({e}); install it (Debian: apt-get install iproute2), or use --network loopback"
            )));
        }
        let probe = format!("{}-probe", self.naming.prefix);
        let _ = ip(&["netns", "del", &probe]);
        ip(&["netns", "add", &probe]).map_err(|e| {
            NetnsError::Unprivileged(format!(
                "to create network namespaces, which failed here ({e}); use --network loopback"
            ))
        })?;
        ip(&["netns", "del", &probe])?;
        Ok(())
    }

    /// Every namespace of this installation that exists now.
    pub fn existing(&self) -> io::Result<BTreeSet<String>> {
        let dir = match std::fs::read_dir(NETNS_DIR) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
            Err(e) => return Err(e),
        };
        let mut out = BTreeSet::new();
        for entry in dir {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if self.naming.owns(&name) {
                out.insert(name);
            }
        }
        Ok(out)
    }

    /// Whether the namespace `name` exists.
    pub fn exists(name: &str) -> bool {
        PathBuf::from(NETNS_DIR).join(name).exists()
    }

    /// Makes VPC `layout.vpc_id`'s namespace look like `layout` (creating it if needed).
    pub fn apply_vpc(&self, layout: &VpcLayout) -> Result<(), NetnsError> {
        let ns = self.naming.vpc(&layout.vpc_id);
        if !Self::exists(&ns) {
            ip(&["netns", "add", &ns])?;
        }
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        crate::place::in_netns_blocking(&ns, || std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))?;
        let dns = format!("{}/32", dns_address(layout.cidr));
        ip(&["-n", &ns, "addr", "replace", &dns, "dev", "lo"])?;
        let link_local = format!("{LINK_LOCAL}/32");
        if layout.lattice {
            ip(&["-n", &ns, "addr", "replace", &link_local, "dev", "lo"])?;
        } else if has_address(&ns, "lo", LINK_LOCAL)? {
            ip(&["-n", &ns, "addr", "del", &link_local, "dev", "lo"])?;
        }
        let existing = links(&ns)?;
        let wanted: BTreeSet<String> = layout.subnets.iter().map(|(id, _)| bridge_name(id)).collect();
        for stale in existing.iter().filter(|l| l.starts_with(BRIDGE_PREFIX) && !wanted.contains(*l)) {
            ip(&["-n", &ns, "link", "del", stale])?;
        }
        for (subnet_id, cidr) in &layout.subnets {
            let bridge = bridge_name(subnet_id);
            if !existing.contains(&bridge) {
                ip(&["-n", &ns, "link", "add", &bridge, "type", "bridge"])?;
            }
            let gateway = format!("{}/{}", gateway_address(*cidr), cidr.prefix_len());
            ip(&["-n", &ns, "addr", "replace", &gateway, "dev", &bridge])?;
            ip(&["-n", &ns, "link", "set", &bridge, "up"])?;
        }
        Ok(())
    }

    /// Creates instance `layout.instance_id`: its namespace, attached to its subnet's bridge in
    /// the VPC's namespace (which must exist), with its address, route and resolver. Whatever
    /// was made is removed again if a step fails.
    pub fn add_instance(&self, layout: &InstanceLayout) -> Result<String, NetnsError> {
        let ns = self.naming.instance(&layout.instance_id);
        let result = self.try_add_instance(&ns, layout);
        if result.is_err() {
            let _ = self.remove(&ns);
        }
        result.map(|()| ns)
    }

    fn try_add_instance(&self, ns: &str, l: &InstanceLayout) -> Result<(), NetnsError> {
        let vpc_ns = self.naming.vpc(&l.vpc_id);
        let port = port_name(&l.instance_id);
        let address = format!("{}/{}", l.address, l.subnet_cidr.prefix_len());
        let gateway = gateway_address(l.subnet_cidr).to_string();
        if Self::exists(ns) {
            ip(&["netns", "del", ns])?;
        }
        ip(&["netns", "add", ns])?;
        // The port end is created inside the VPC's namespace and `eth0` inside the instance's:
        // neither ever appears on the host.
        let _ = ip(&["-n", &vpc_ns, "link", "del", &port]);
        ip(&["link", "add", &port, "netns", &vpc_ns, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
        ip(&["-n", &vpc_ns, "link", "set", &port, "master", &bridge_name(&l.subnet_id), "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "addr", "add", &address, "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "route", "add", "default", "via", &gateway])?;
        // As in a container: any user may bind any port inside (an unprivileged task can serve 80).
        crate::place::in_netns_blocking(ns, || std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0"))?;
        let etc = PathBuf::from(ETC_NETNS).join(ns);
        std::fs::create_dir_all(&etc)?;
        std::fs::write(etc.join("resolv.conf"), format!("nameserver {}\n", l.dns))?;
        Ok(())
    }

    /// Removes the namespace `name` (a VPC's or an instance's) and its files; links inside it go
    /// with it, and processes still running inside it are killed (as terminating an instance
    /// does), so that none outlives its network. Removing one that is gone is not an error.
    pub fn remove(&self, name: &str) -> Result<(), NetnsError> {
        if !self.naming.owns(name) {
            return Err(NetnsError::Command {
                command: format!("ip netns del {name}"),
                message: "not a namespace of this installation".into(),
            });
        }
        if Self::exists(name) {
            for pid in ip(&["netns", "pids", name])?.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            ip(&["netns", "del", name])?;
        }
        match std::fs::remove_dir_all(PathBuf::from(ETC_NETNS).join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

impl Netns {
    /// Makes VPC `vpc_id`'s router forget the link-layer address it knew for `address` (an
    /// instance or task that is gone: whoever gets the address next has another).
    pub fn forget_neighbor(&self, vpc_id: &str, address: Ipv4Addr) -> Result<(), NetnsError> {
        let ns = self.naming.vpc(vpc_id);
        if Self::exists(&ns) {
            ip(&["-n", &ns, "neigh", "flush", "to", &address.to_string()])?;
        }
        Ok(())
    }
}

/// The DNS address of a VPC: its block's base + 2 (as AWS's resolver).
pub fn dns_address(vpc: Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(vpc.base()) + 2)
}

/// The gateway of a subnet: its block's base + 1.
pub fn gateway_address(subnet: Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.base()) + 1)
}

/// The first address of a subnet that instances and tasks may have: AWS reserves the first four
/// (network, router, DNS, future) and the last.
pub fn first_host(subnet: Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.base()) + 4)
}

/// The last address instances and tasks may have.
pub fn last_host(subnet: Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.base()) + (subnet.size() as u32) - 2)
}

/// A subnet's bridge: `sub` and the ID's last 12 hex digits (link names hold 15 bytes).
fn bridge_name(subnet_id: &str) -> String {
    format!("{BRIDGE_PREFIX}{}", tail(subnet_id, 12))
}

/// An instance's port on its bridge: `i` and the ID's last 14 hex digits.
fn port_name(instance_id: &str) -> String {
    format!("i{}", tail(instance_id, 14))
}

fn tail(id: &str, n: usize) -> &str {
    let hex = id.rsplit('-').next().unwrap_or(id);
    &hex[hex.len().saturating_sub(n)..]
}

/// The names of the links in namespace `ns`.
fn links(ns: &str) -> Result<BTreeSet<String>, NetnsError> {
    let out = ip(&["-n", ns, "-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect())
}

/// Whether `dev` in namespace `ns` has address `addr`.
fn has_address(ns: &str, dev: &str, addr: Ipv4Addr) -> Result<bool, NetnsError> {
    let out = ip(&["-n", ns, "-o", "-4", "addr", "show", "dev", dev])?;
    let needle = format!(" {addr}/");
    Ok(out.contains(&needle))
}

/// Runs `ip ARGS…`; its standard output, or an error with what it printed.
fn ip(args: &[&str]) -> Result<String, NetnsError> {
    let command = || format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetnsError::Command { command: command(), message: e.to_string() })?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(NetnsError::Command { command: command(), message });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let n = Naming::new("trx1").unwrap();
        assert_eq!(n.vpc("vpc-0123456789abcdef0"), "trx1-vpc-0123456789abcdef0");
        assert!(n.owns("trx1-i-1") && !n.owns("trx10-i-1") && !n.owns("trx1"));
        assert!(Naming::new("Tr").is_err() && Naming::new("").is_err() && Naming::new("a-b").is_err());
        assert_eq!(bridge_name("subnet-0123456789abcdef0"), "sub56789abcdef0");
        assert!(bridge_name("subnet-0123456789abcdef0").len() <= 15);
        assert_eq!(port_name("i-0123456789abcdef0").len(), 15);
    }

    #[test]
    fn addresses() {
        let c: Cidr = "10.1.2.0/24".parse().unwrap();
        assert_eq!(dns_address(c), Ipv4Addr::new(10, 1, 2, 2));
        assert_eq!(gateway_address(c), Ipv4Addr::new(10, 1, 2, 1));
        assert_eq!(first_host(c), Ipv4Addr::new(10, 1, 2, 4));
        assert_eq!(last_host(c), Ipv4Addr::new(10, 1, 2, 254));
    }

    /// Removes a test's namespaces however the test ends.
    struct Cleanup(Netns);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for ns in self.0.existing().unwrap_or_default() {
                let _ = self.0.remove(&ns);
            }
        }
    }

    fn root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// A VPC with two subnets and an instance in one: the instance reaches the VPC's DNS address
    /// and the link-local address (through its gateway) where a socket opened in the VPC's
    /// namespace listens; without Lattice the link-local address is gone; removing everything
    /// leaves nothing behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_vpc_with_an_instance() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let netns = Netns::new(Naming::new(&format!("tnet{}", std::process::id())).unwrap());
        let _cleanup = Cleanup(netns.clone());
        netns.check_privileges().unwrap();
        let cidr: Cidr = "10.9.0.0/16".parse().unwrap();
        let mut layout = VpcLayout {
            vpc_id: "vpc-00000000000000001".into(),
            cidr,
            subnets: vec![
                ("subnet-00000000000000001".into(), "10.9.1.0/24".parse().unwrap()),
                ("subnet-00000000000000002".into(), "10.9.2.0/24".parse().unwrap()),
            ],
            lattice: true,
        };
        netns.apply_vpc(&layout).unwrap();
        netns.apply_vpc(&layout).unwrap(); // idempotent
        let vpc_ns = netns.naming().vpc(&layout.vpc_id);
        let place = crate::Place::netns(&vpc_ns);
        let listener = place.tcp_listener((LINK_LOCAL, 8080).into(), 16).await.unwrap();
        let instance = InstanceLayout {
            instance_id: "i-00000000000000001".into(),
            vpc_id: layout.vpc_id.clone(),
            subnet_id: "subnet-00000000000000002".into(),
            subnet_cidr: "10.9.2.0/24".parse().unwrap(),
            address: Ipv4Addr::new(10, 9, 2, 4),
            dns: dns_address(cidr),
        };
        let ins = netns.add_instance(&instance).unwrap();
        assert!(Netns::exists(&ins));
        let resolv = std::fs::read_to_string(format!("/etc/netns/{ins}/resolv.conf")).unwrap();
        assert_eq!(resolv, "nameserver 10.9.0.2\n");
        // From the instance's namespace: connect to the link-local address.
        let client = crate::Place::netns(&ins).tcp_socket((LINK_LOCAL, 8080).into()).await.unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let (connected, accepted) = tokio::join!(client.connect((LINK_LOCAL, 8080).into()), listener.accept());
        connected.unwrap();
        let (_, peer) = accepted.unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(Ipv4Addr::new(10, 9, 2, 4)));
        // Lattice off: the address is gone.
        layout.lattice = false;
        layout.subnets.pop();
        netns.apply_vpc(&layout).unwrap();
        assert!(!has_address(&vpc_ns, "lo", LINK_LOCAL).unwrap());
        assert!(!links(&vpc_ns).unwrap().contains(&bridge_name("subnet-00000000000000002")));
        for ns in netns.existing().unwrap() {
            netns.remove(&ns).unwrap();
        }
        assert!(netns.existing().unwrap().is_empty());
        assert!(!std::path::Path::new(&format!("/etc/netns/{ins}")).exists());
    }
}
