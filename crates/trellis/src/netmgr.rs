//! netns mode's network manager: keeps this node's network namespaces in step with the store, and
//! runs instances (`trellis vpc exec`).
//!
//! - **VPCs.** Every snapshot lists every VPC with its block and subnets; the manager applies each
//!   VPC's layout (`trellis_net::Netns::apply_vpc`) when it changed or its namespace is gone, with
//!   the link-local address present exactly while the VPC is associated, and removes this
//!   installation's namespaces that nothing in the store accounts for (a deleted VPC, an instance
//!   whose record is gone, leftovers of a crash). Only then does it pass the snapshot on to the
//!   data plane, so that the proxy opens its sockets in networks that already exist.
//! - **Instances.** An instance is a namespace on a subnet with an address from the VPC's
//!   allocator (`trellis_control::ipam`), recorded under `node/<node>/instance/<id>` with the process that owns it
//!   (the `trellis vpc exec` that asked for it). An instance lives while its owner does: the
//!   manager checks every [`REAP_INTERVAL`] and removes those whose owner is gone (the CLI removes
//!   its instance itself when its command exits; this catches a CLI that was killed).
//! - Namespaces are recorded too: `node/<node>/netns/<name>` → what it is for.
//!
//! One lock serialises all namespace work, so a reconcile never sees half an instance.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};
use trellis_model::cidr::Cidr;
use trellis_model::snapshot::{Snapshot, VpcNetwork};
use trellis_net::Netns;
use trellis_net::netns::{self, InstanceLayout, NetnsError, VpcLayout};
use trellis_store::{Op, Store, StoreExt, Txn};

/// How often dead instances are looked for (and failed network work retried).
const REAP_INTERVAL: Duration = Duration::from_secs(2);
/// How long a new instance waits for its VPC and subnet to reach the compiled configuration.
const FRESH: Duration = Duration::from_secs(2);

/// The network manager of one node.
pub struct NetManager {
    store: Arc<dyn Store>,
    node: String,
    netns: Netns,
    /// Serialises namespace work; holds the layouts applied so far.
    state: Mutex<Applied>,
    /// The snapshot last reconciled (instances read VPC layouts from it).
    current: watch::Sender<Arc<Snapshot>>,
    /// The namespaces of this process's running tasks (a task does not outlive its server).
    tasks: std::sync::Mutex<BTreeSet<String>>,
}

/// A task's network (netns mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskNetwork {
    /// Its namespace.
    pub netns: String,
    /// Its VPC.
    pub vpc_id: String,
    /// Its subnet.
    pub subnet_id: String,
    /// Its address.
    pub address: Ipv4Addr,
}

/// VPC layouts applied by this process, by VPC ID.
#[derive(Default)]
struct Applied {
    vpcs: HashMap<String, VpcLayout>,
}

/// An instance, as recorded in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// `i-…`.
    pub instance_id: String,
    /// The VPC.
    pub vpc_id: String,
    /// The subnet.
    pub subnet_id: String,
    /// Its address.
    pub address: Ipv4Addr,
    /// Its network namespace (`ip netns exec <netns> …` runs inside it).
    pub netns: String,
    /// The VPC's DNS address (its resolver).
    pub dns: Ipv4Addr,
    /// The process that owns it.
    pub owner_pid: u32,
    /// That process's start time (clock ticks since boot), so that a reused PID is not mistaken
    /// for the owner.
    pub owner_start: u64,
}

/// Why an instance could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The VPC does not exist.
    #[error("the VPC {0} does not exist")]
    NoVpc(String),
    /// The subnet does not exist in the VPC, or the VPC has none.
    #[error("{0}")]
    NoSubnet(String),
    /// The owner process is not there.
    #[error("process {0} is not running")]
    NoOwner(u32),
    /// Every address of the subnet is taken.
    #[error("the subnet {0} has no free address")]
    Full(String),
    /// The instance does not exist.
    #[error("the instance {0} does not exist")]
    NotFound(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] trellis_store::Error),
    /// Making the network failed.
    #[error("network: {0}")]
    Network(#[from] NetnsError),
}

// === impl NetManager ===

impl NetManager {
    /// The manager of `node`'s namespaces.
    pub fn new(store: Arc<dyn Store>, node: String, netns: Netns) -> Arc<Self> {
        let (current, _) = watch::channel(Arc::new(Snapshot::default()));
        let tasks = std::sync::Mutex::new(BTreeSet::new());
        Arc::new(Self { store, node, netns, state: Mutex::new(Applied::default()), current, tasks })
    }

    /// Reconciles with every snapshot of `raw` and passes it on to `out`; looks for dead instances
    /// every [`REAP_INTERVAL`]; until `stop`. Namespaces stay when the server stops (VPCs outlive
    /// it; `trellis net cleanup` removes them).
    pub async fn run(
        self: Arc<Self>,
        mut raw: watch::Receiver<Arc<Snapshot>>,
        out: watch::Sender<Arc<Snapshot>>,
        mut stop: watch::Receiver<bool>,
    ) {
        // The channel starts with an empty snapshot that no compile made: reconciling with it
        // would take every VPC's namespace for a stray. Wait for the first compile.
        tokio::select! {
            changed = raw.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let mut following = true;
        loop {
            let snapshot = raw.borrow_and_update().clone();
            self.reconcile(&snapshot).await;
            out.send_replace(snapshot);
            self.reap().await;
            tokio::select! {
                changed = raw.changed(), if following => following = changed.is_ok(),
                () = tokio::time::sleep(REAP_INTERVAL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Applies every VPC's layout that changed and removes namespaces nothing accounts for.
    async fn reconcile(&self, snapshot: &Arc<Snapshot>) {
        let mut applied = self.state.lock().await;
        self.current.send_replace(snapshot.clone());
        let naming = self.netns.naming().clone();
        let mut wanted = BTreeSet::new();
        for network in snapshot.networks.values() {
            let layout = layout(network, snapshot.vpcs.contains_key(&network.vpc_id));
            let name = naming.vpc(&network.vpc_id);
            wanted.insert(name.clone());
            if applied.vpcs.get(&network.vpc_id) == Some(&layout) && Netns::exists(&name) {
                continue;
            }
            let netns = self.netns.clone();
            let work = layout.clone();
            match blocking(move || netns.apply_vpc(&work)).await {
                Ok(()) => {
                    tracing::info!(vpc = %network.vpc_id, netns = %name, lattice = layout.lattice, "VPC network ready");
                    self.record(&name, &format!("vpc/{}", network.vpc_id)).await;
                    applied.vpcs.insert(network.vpc_id.clone(), layout);
                }
                Err(e) => {
                    tracing::warn!(vpc = %network.vpc_id, error = %e, "cannot make the VPC's network; will retry");
                    applied.vpcs.remove(&network.vpc_id);
                }
            }
        }
        applied.vpcs.retain(|id, _| snapshot.networks.contains_key(id));
        let instances = match self.instances().await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read instances; leaving namespaces as they are");
                return;
            }
        };
        wanted.extend(instances.into_iter().map(|i| i.netns));
        wanted.extend(self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
        let existing = match self.netns.existing() {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list network namespaces");
                return;
            }
        };
        for stale in existing.difference(&wanted) {
            let (netns, name) = (self.netns.clone(), stale.clone());
            match blocking(move || netns.remove(&name)).await {
                Ok(()) => {
                    tracing::info!(netns = %stale, "network namespace removed");
                    let _ = self.write(vec![Op::Delete(self.netns_key(stale))]).await;
                }
                Err(e) => tracing::warn!(netns = %stale, error = %e, "cannot remove a network namespace"),
            }
        }
    }

    /// Creates an instance in `vpc_id` (on `subnet_id`, else the VPC's first subnet) owned by
    /// process `owner_pid`.
    pub async fn create_instance(
        &self,
        vpc_id: &str,
        subnet_id: Option<&str>,
        owner_pid: u32,
    ) -> Result<Instance, InstanceError> {
        let owner_start = process_start(owner_pid).ok_or(InstanceError::NoOwner(owner_pid))?;
        self.wait_known(vpc_id, subnet_id).await;
        let mut applied = self.state.lock().await;
        let (vpc_cidr, subnet_id, subnet) = self.ready_subnet(&mut applied, vpc_id, subnet_id).await?;
        let instance_id = new_instance_id();
        let address = self.claim_address(vpc_id, subnet, &instance_id).await?;
        let instance = Instance {
            instance_id: instance_id.clone(),
            vpc_id: vpc_id.to_owned(),
            subnet_id: subnet_id.clone(),
            address,
            netns: self.netns.naming().instance(&instance_id),
            dns: netns::dns_address(vpc_cidr),
            owner_pid,
            owner_start,
        };
        // Recorded before the namespace exists, so that a reconcile never takes it for a stray.
        let record = serde_json::to_vec(&instance).map_err(|e| trellis_store::Error::Backend(e.to_string()))?;
        self.write(vec![Op::Put(self.instance_key(&instance_id), record)]).await?;
        let spec = InstanceLayout {
            instance_id: instance_id.clone(),
            vpc_id: vpc_id.to_owned(),
            subnet_id: subnet_id.clone(),
            subnet_cidr: subnet,
            address,
            dns: instance.dns,
        };
        let (netns, first) = (self.netns.clone(), spec.clone());
        let mut made = blocking(move || netns.add_instance(&first)).await;
        if let Err(e) = &made {
            // Seen rarely under load: the subnet's bridge was not there to attach to. The VPC's
            // layout is applied again, and the instance made once more.
            tracing::warn!(instance = %instance_id, vpc = vpc_id, error = %e, "cannot attach the instance; applying the VPC's network again");
            applied.vpcs.remove(vpc_id);
            if self.ready_subnet(&mut applied, vpc_id, Some(&subnet_id)).await.is_ok() {
                let netns = self.netns.clone();
                made = blocking(move || netns.add_instance(&spec)).await;
            }
        }
        match made {
            Ok(name) => {
                self.record(&name, &format!("instance/{instance_id}")).await;
                tracing::info!(instance = %instance_id, vpc = vpc_id, %address, "instance started");
                Ok(instance)
            }
            Err(e) => {
                self.forget(&instance).await;
                Err(e.into())
            }
        }
    }

    /// Waits a little for VPC `vpc_id` (and subnet `subnet_id`, else any) to reach the
    /// reconciled configuration: they may have been created a moment ago. Not under the lock
    /// (the reconcile that brings them takes it).
    async fn wait_known(&self, vpc_id: &str, subnet_id: Option<&str>) {
        let mut snapshots = self.current.subscribe();
        if !knows(&snapshots.borrow(), vpc_id, subnet_id) {
            let _ = tokio::time::timeout(FRESH, snapshots.wait_for(|s| knows(s, vpc_id, subnet_id))).await;
        }
    }

    /// Makes VPC `vpc_id`'s network ready for a new namespace on `subnet_id` (else its first
    /// subnet), applying the VPC's layout if this process has not yet. The VPC's block, the
    /// subnet's ID and its block.
    async fn ready_subnet(
        &self,
        applied: &mut Applied,
        vpc_id: &str,
        subnet_id: Option<&str>,
    ) -> Result<(Cidr, String, Cidr), InstanceError> {
        let snapshot = self.current.borrow().clone();
        let network = snapshot.networks.get(vpc_id).ok_or_else(|| InstanceError::NoVpc(vpc_id.to_owned()))?;
        let (subnet_id, subnet) = match subnet_id {
            Some(id) => network.subnets.get_key_value(id).ok_or_else(|| {
                InstanceError::NoSubnet(format!("the subnet {id} does not exist in the VPC {vpc_id}"))
            })?,
            None => network.subnets.iter().next().ok_or_else(|| {
                InstanceError::NoSubnet(format!(
                    "the VPC {vpc_id} has no subnet: create one first (aws ec2 create-subnet --vpc-id {vpc_id} …)"
                ))
            })?,
        };
        let layout = layout(network, snapshot.vpcs.contains_key(vpc_id));
        if applied.vpcs.get(vpc_id) != Some(&layout) || !Netns::exists(&self.netns.naming().vpc(vpc_id)) {
            let (netns, work) = (self.netns.clone(), layout.clone());
            blocking(move || netns.apply_vpc(&work)).await?;
            applied.vpcs.insert(vpc_id.to_owned(), layout);
        }
        Ok((network.cidr, subnet_id.clone(), *subnet))
    }

    /// The VPC subnet `subnet_id` belongs to (waiting a little for one created a moment ago).
    pub async fn vpc_of_subnet(&self, subnet_id: &str) -> Option<String> {
        let find =
            |s: &Snapshot| s.networks.values().find(|n| n.subnets.contains_key(subnet_id)).map(|n| n.vpc_id.clone());
        let mut snapshots = self.current.subscribe();
        if let Some(vpc) = find(&snapshots.borrow()) {
            return Some(vpc);
        }
        let _ = tokio::time::timeout(FRESH, snapshots.wait_for(|s| find(s).is_some())).await;
        find(&self.current.borrow())
    }

    /// Gives task `task_id` (32 hex digits) a network on `subnet_id` of `vpc_id`: its own
    /// namespace and an address from the VPC's allocator, held by `holder` (the task's ARN).
    pub async fn attach_task(
        &self,
        task_id: &str,
        vpc_id: &str,
        subnet_id: &str,
        holder: &str,
    ) -> Result<TaskNetwork, InstanceError> {
        self.wait_known(vpc_id, Some(subnet_id)).await;
        let mut applied = self.state.lock().await;
        let (vpc_cidr, subnet_id, subnet) = self.ready_subnet(&mut applied, vpc_id, Some(subnet_id)).await?;
        let id = format!("t-{task_id}");
        let name = self.netns.naming().instance(&id);
        let address = self.claim_address(vpc_id, subnet, holder).await?;
        let network =
            TaskNetwork { netns: name.clone(), vpc_id: vpc_id.to_owned(), subnet_id: subnet_id.clone(), address };
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone());
        let spec = InstanceLayout {
            instance_id: id,
            vpc_id: vpc_id.to_owned(),
            subnet_id,
            subnet_cidr: subnet,
            address,
            dns: netns::dns_address(vpc_cidr),
        };
        let netns = self.netns.clone();
        match blocking(move || netns.add_instance(&spec)).await {
            Ok(_) => {
                self.record(&name, &format!("task/{holder}")).await;
                Ok(network)
            }
            Err(e) => {
                drop(applied);
                self.detach_task(&network).await;
                Err(e.into())
            }
        }
    }

    /// Removes a task's network: its namespace (and whatever still runs in it) and its address.
    pub async fn detach_task(&self, network: &TaskNetwork) {
        let _applied = self.state.lock().await;
        let (netns, name) = (self.netns.clone(), network.netns.clone());
        let (vpc, address) = (network.vpc_id.clone(), network.address);
        let removed = blocking(move || {
            netns.remove(&name)?;
            netns.forget_neighbor(&vpc, address)
        });
        if let Err(e) = removed.await {
            tracing::warn!(netns = %network.netns, error = %e, "cannot remove a task's network");
        }
        let ops = vec![
            Op::Delete(trellis_control::ipam::key(&network.vpc_id, network.address)),
            Op::Delete(self.netns_key(&network.netns)),
        ];
        if let Err(e) = self.write(ops).await {
            tracing::warn!(netns = %network.netns, error = %e, "cannot release a task's address");
        }
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).remove(&network.netns);
    }

    /// Removes instance `instance_id`: its namespace, its address and its record.
    pub async fn delete_instance(&self, instance_id: &str) -> Result<(), InstanceError> {
        let _applied = self.state.lock().await;
        let instance = self
            .store
            .get(&self.instance_key(instance_id))
            .await?
            .and_then(|kv| serde_json::from_slice::<Instance>(&kv.value).ok())
            .ok_or_else(|| InstanceError::NotFound(instance_id.to_owned()))?;
        self.remove_instance(&instance).await
    }

    async fn remove_instance(&self, instance: &Instance) -> Result<(), InstanceError> {
        let (netns, name) = (self.netns.clone(), instance.netns.clone());
        blocking(move || netns.remove(&name)).await?;
        self.forget(instance).await;
        tracing::info!(instance = %instance.instance_id, "instance removed");
        Ok(())
    }

    /// Deletes an instance's records (its address, its record, its namespace's record).
    async fn forget(&self, instance: &Instance) {
        let txn = Txn {
            compare: Vec::new(),
            success: vec![
                Op::Delete(trellis_control::ipam::key(&instance.vpc_id, instance.address)),
                Op::Delete(self.instance_key(&instance.instance_id)),
                Op::Delete(self.netns_key(&instance.netns)),
            ],
            failure: Vec::new(),
        };
        if let Err(e) = self.store.txn(txn).await {
            tracing::warn!(instance = %instance.instance_id, error = %e, "cannot delete the instance's records");
        }
    }

    /// Removes the instances whose owner process is gone.
    async fn reap(&self) {
        let Ok(instances) = self.instances().await else { return };
        let dead: Vec<Instance> =
            instances.into_iter().filter(|i| process_start(i.owner_pid) != Some(i.owner_start)).collect();
        if dead.is_empty() {
            return;
        }
        let _applied = self.state.lock().await;
        for instance in dead {
            tracing::info!(instance = %instance.instance_id, owner = instance.owner_pid, "instance's owner is gone");
            if let Err(e) = self.remove_instance(&instance).await {
                tracing::warn!(instance = %instance.instance_id, error = %e, "cannot remove the instance");
            }
            crate::vpc::TrustBundle::remove_left_by(instance.owner_pid, &instance.instance_id);
        }
    }

    /// This node's instances.
    pub async fn instances(&self) -> Result<Vec<Instance>, trellis_store::Error> {
        let listed = self.store.list_prefix(&format!("node/{}/instance/", self.node), None, 0).await?;
        Ok(listed.kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect())
    }

    /// The first free address of `subnet`, claimed for `instance_id`.
    async fn claim_address(&self, vpc_id: &str, subnet: Cidr, instance_id: &str) -> Result<Ipv4Addr, InstanceError> {
        let range = (netns::first_host(subnet), netns::last_host(subnet));
        trellis_control::ipam::claim(self.store.as_ref(), vpc_id, range, instance_id)
            .await?
            .ok_or_else(|| InstanceError::Full(subnet.to_string()))
    }

    /// Records that namespace `name` is this installation's, for `what`.
    async fn record(&self, name: &str, what: &str) {
        if let Err(e) = self.write(vec![Op::Put(self.netns_key(name), what.as_bytes().to_vec())]).await {
            tracing::warn!(netns = name, error = %e, "cannot record the network namespace");
        }
    }

    /// Applies `ops` unconditionally.
    async fn write(&self, ops: Vec<Op>) -> Result<(), trellis_store::Error> {
        self.store.txn(Txn { compare: Vec::new(), success: ops, failure: Vec::new() }).await.map(|_| ())
    }

    fn instance_key(&self, instance_id: &str) -> String {
        format!("node/{}/instance/{instance_id}", self.node)
    }

    fn netns_key(&self, name: &str) -> String {
        format!("node/{}/netns/{name}", self.node)
    }
}

/// Whether `snapshot` has VPC `vpc_id` (and subnet `subnet_id` in it, if given; else any).
fn knows(snapshot: &Snapshot, vpc_id: &str, subnet_id: Option<&str>) -> bool {
    snapshot.networks.get(vpc_id).is_some_and(|n| match subnet_id {
        Some(id) => n.subnets.contains_key(id),
        None => !n.subnets.is_empty(),
    })
}

/// The layout a VPC's network must have.
fn layout(network: &VpcNetwork, lattice: bool) -> VpcLayout {
    VpcLayout {
        vpc_id: network.vpc_id.clone(),
        cidr: network.cidr,
        subnets: network.subnets.iter().map(|(id, cidr)| (id.clone(), *cidr)).collect(),
        lattice,
    }
}

/// `i-` and 17 random hex digits, as EC2's instance IDs.
fn new_instance_id() -> String {
    let mut bytes = [0u8; 9];
    if getrandom::fill(&mut bytes).is_err() {
        // No entropy source: the time still makes collisions unlikely on one node.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes.copy_from_slice(&nanos.to_le_bytes()[..9]);
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("i-{}", &hex[..17])
}

/// When process `pid` started (clock ticks since boot), if it is running.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3 (state); the start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Runs blocking network work off the runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, NetnsError> + Send + 'static,
) -> Result<T, NetnsError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| NetnsError::Io(std::io::Error::other(e.to_string())))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_read() {
        let me = process_start(std::process::id()).unwrap();
        assert!(me > 0);
        assert_eq!(process_start(std::process::id()), Some(me));
        assert_eq!(process_start(u32::MAX), None);
    }

    #[test]
    fn instance_ids_look_like_ec2s() {
        let id = new_instance_id();
        assert!(id.starts_with("i-") && id.len() == 19 && id[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }

    /// One VPC whose network cannot be made (its namespace name is taken by a file that is not
    /// a namespace) does not keep the others from theirs; the broken one is retried later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_broken_network_does_not_take_the_others_down() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(trellis_store::SqliteStore::open(&dir.path().join("s.db"), Default::default()).unwrap());
        let prefix = format!("tmgr{}", std::process::id() % 100_000);
        let netns = Netns::new(trellis_net::Naming::new(&prefix).unwrap());
        struct Cleanup(Netns, String);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(format!("/run/netns/{}", self.1));
                for ns in self.0.existing().unwrap_or_default() {
                    let _ = self.0.remove(&ns);
                }
            }
        }
        let (good, bad) = ("vpc-0000000000000000a", "vpc-0000000000000000b");
        let bad_ns = netns.naming().vpc(bad);
        let _cleanup = Cleanup(netns.clone(), bad_ns.clone());
        let mut ops = Vec::new();
        for (id, cidr) in [(good, "10.1.0.0/16"), (bad, "10.2.0.0/16")] {
            let vpc = serde_json::json!({"id": id, "cidrBlock": cidr, "instanceTenancy": "default",
                                         "defaultSecurityGroupId": "sg-0", "tags": []});
            ops.push(Op::Put(format!("r/us-east-1/000000000000/res/vpc/{id}"), vpc.to_string().into_bytes()));
        }
        store.txn(Txn { compare: Vec::new(), success: ops, failure: Vec::new() }).await.unwrap();
        std::fs::create_dir_all("/run/netns").unwrap();
        std::fs::write(format!("/run/netns/{bad_ns}"), b"not a namespace").unwrap();

        let manager = NetManager::new(store.clone(), "n1".into(), netns.clone());
        let snapshot = Arc::new(trellis_control::compile::compile(store.as_ref(), "n1").await.unwrap());
        manager.reconcile(&snapshot).await;
        let good_ns = netns.naming().vpc(good);
        assert!(Netns::exists(&good_ns), "the good VPC has its network");
        let applied = manager.state.lock().await;
        assert!(applied.vpcs.contains_key(good) && !applied.vpcs.contains_key(bad), "the broken one is retried");
    }
}
