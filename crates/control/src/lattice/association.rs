//! Service network associations: with VPCs (`snva-`, [`vpc`]) and with services (`snsa-`,
//! [`service`]). Each association is a record plus reference entries from both ends, and moves
//! the counters the delete guards of its ends read: `sn-vpc`/`vpc-snva` for VPC associations
//! (DeleteServiceNetwork, EC2 DeleteVpc) and `sn-svc`/`svc-sn` for service associations
//! (DeleteServiceNetwork, DeleteService). The counters also hold the per-network quotas.

use std::collections::BTreeMap;

use trellis_model::Kind;
use trellis_model::lattice::ServiceNetwork;

use super::{ApiError, Req};
use crate::repo;

mod service;
mod vpc;

pub(crate) use service::{
    create as create_service, delete as delete_service, get as get_service, list as list_service,
};
pub(crate) use vpc::{
    create as create_vpc, delete as delete_vpc, get as get_vpc, list as list_vpc, update as update_vpc,
};

/// Service networks read while rendering a listing, each read once.
#[derive(Default)]
struct Networks(BTreeMap<String, Option<ServiceNetwork>>);

impl Networks {
    /// The service network `id`, if it still exists.
    async fn get(&mut self, req: &Req<'_>, id: &str) -> Result<Option<&ServiceNetwork>, ApiError> {
        if !self.0.contains_key(id) {
            let sn = repo::load::<ServiceNetwork>(req.store(), &req.keys.res(Kind::ServiceNetwork, id)).await?;
            self.0.insert(id.to_owned(), sn.map(|v| v.value));
        }
        Ok(self.0.get(id).and_then(Option::as_ref))
    }
}

#[cfg(test)]
mod scenario_tests;
#[cfg(test)]
mod tests;
