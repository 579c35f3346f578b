//! Certificates as the data plane serves them: the managed certificates of generated names (one
//! per zone, issued by the installation's certificate authority) and customer certificates (ACM,
//! by ARN). DER throughout; the proxy turns each into a signing key once.

use std::collections::HashMap;
use std::sync::Arc;

/// Every certificate the data plane may present, published as one value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Certificates {
    /// Managed certificates of generated names, by zone: the name after its first label,
    /// lowercase (`7d67968.vpc-lattice-svcs.us-east-1.on.aws`). Each covers `*.<zone>`.
    pub zones: HashMap<String, Arc<Identity>>,
    /// Customer certificates (ACM), by certificate ARN.
    pub by_arn: HashMap<String, Arc<Identity>>,
}

/// A certificate chain and its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// What tells this identity from another for the same name (its serial number, in hex):
    /// the proxy keeps a parsed key across publications while this stays the same.
    pub serial: String,
    /// The leaf first, then its issuers (DER).
    pub chain: Vec<Vec<u8>>,
    /// The private key, PKCS#8 DER.
    pub key: Vec<u8>,
    /// When the leaf expires, in milliseconds after the Unix epoch.
    pub not_after_ms: u64,
}

impl Certificates {
    /// The managed certificate that covers `name` (a generated name, lowercase), if any.
    pub fn managed_for(&self, name: &str) -> Option<&Arc<Identity>> {
        self.zones.get(zone_of(name)?)
    }
}

/// The zone a generated name's managed certificate is issued for: the name after its first
/// label.
pub fn zone_of(name: &str) -> Option<&str> {
    name.split_once('.').map(|(_, zone)| zone).filter(|z| !z.is_empty())
}
