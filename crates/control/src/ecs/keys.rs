//! Where ECS records live, and their ARNs. Every ECS key starts with `ecs/<region>/<account>/`
//! (outside Lattice's `r/`), so that the scheduler reads all of ECS with one listing of `ecs/`
//! and the Lattice compiler never sees it:
//!
//! | key | value |
//! |---|---|
//! | `cluster/<name>` | `Cluster` |
//! | `family/<family>` | the family's last revision number (revisions are never reused) |
//! | `taskdef/<family>/<revision, 10 digits>` | `TaskDefinition` |
//! | `tags/taskdef/<family>/<revision, 10 digits>` | the definition's tags (`TaskDefinition` has no `tags`) |
//! | `service/<cluster>/<name>` | `Service` |
//! | `task/<cluster>/<task id>` | `Task` |
//!
//! Cluster, service and family names are letters, digits, `-` and `_`, so no key is a prefix of
//! another's parent.

/// The prefix of every ECS key.
pub(crate) const PREFIX: &str = "ecs/";

/// The ECS key layout and ARNs for one region and account.
#[derive(Clone, Debug)]
pub(crate) struct EcsKeys {
    region: String,
    account: String,
    base: String,
}

/// The parts of an ECS ARN: `arn:aws:ecs:<region>:<account>:<kind>/<path…>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EcsArn<'a> {
    pub(crate) region: &'a str,
    pub(crate) account: &'a str,
    /// `cluster`, `service`, `task`, `task-definition`, `container`.
    pub(crate) kind: &'a str,
    /// What follows `<kind>/`.
    pub(crate) path: &'a str,
}

impl EcsKeys {
    pub(crate) fn new(region: &str, account: &str) -> Self {
        Self { region: region.to_owned(), account: account.to_owned(), base: format!("{PREFIX}{region}/{account}/") }
    }

    pub(crate) fn region(&self) -> &str {
        &self.region
    }

    pub(crate) fn account(&self) -> &str {
        &self.account
    }

    pub(crate) fn cluster(&self, name: &str) -> String {
        format!("{}{name}", self.clusters())
    }

    pub(crate) fn clusters(&self) -> String {
        format!("{}cluster/", self.base)
    }

    /// The counter of a family's revisions.
    pub(crate) fn family(&self, family: &str) -> String {
        format!("{}family/{family}", self.base)
    }

    pub(crate) fn task_definition(&self, family: &str, revision: i32) -> String {
        format!("{}{revision:010}", self.task_definitions_of(family))
    }

    /// Every revision of one family.
    pub(crate) fn task_definitions_of(&self, family: &str) -> String {
        format!("{}{family}/", self.task_definitions())
    }

    /// Every task definition.
    pub(crate) fn task_definitions(&self) -> String {
        format!("{}taskdef/", self.base)
    }

    pub(crate) fn task_definition_tags(&self, family: &str, revision: i32) -> String {
        format!("{}tags/taskdef/{family}/{revision:010}", self.base)
    }

    pub(crate) fn service(&self, cluster: &str, name: &str) -> String {
        format!("{}{name}", self.services(cluster))
    }

    pub(crate) fn services(&self, cluster: &str) -> String {
        format!("{}service/{cluster}/", self.base)
    }

    pub(crate) fn task(&self, cluster: &str, id: &str) -> String {
        format!("{}{id}", self.tasks(cluster))
    }

    pub(crate) fn tasks(&self, cluster: &str) -> String {
        format!("{}task/{cluster}/", self.base)
    }

    fn arn(&self, rest: &str) -> String {
        format!("arn:aws:ecs:{}:{}:{rest}", self.region, self.account)
    }

    pub(crate) fn cluster_arn(&self, name: &str) -> String {
        self.arn(&format!("cluster/{name}"))
    }

    pub(crate) fn service_arn(&self, cluster: &str, name: &str) -> String {
        self.arn(&format!("service/{cluster}/{name}"))
    }

    pub(crate) fn task_arn(&self, cluster: &str, id: &str) -> String {
        self.arn(&format!("task/{cluster}/{id}"))
    }

    pub(crate) fn task_definition_arn(&self, family: &str, revision: i32) -> String {
        self.arn(&format!("task-definition/{family}:{revision}"))
    }

    pub(crate) fn container_arn(&self, cluster: &str, task_id: &str, uuid: &str) -> String {
        self.arn(&format!("container/{cluster}/{task_id}/{uuid}"))
    }

    /// Whether an ARN is of this region and account.
    pub(crate) fn is_local(&self, arn: &EcsArn<'_>) -> bool {
        arn.region == self.region && arn.account == self.account
    }
}

// === impl EcsArn ===

impl<'a> EcsArn<'a> {
    /// Splits an ECS ARN; `None` if `text` is not one.
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        let rest = text.strip_prefix("arn:")?;
        let mut parts = rest.splitn(5, ':');
        let (_partition, service) = (parts.next()?, parts.next()?);
        let (region, account, resource) = (parts.next()?, parts.next()?, parts.next()?);
        if service != "ecs" || region.is_empty() || account.is_empty() {
            return None;
        }
        let (kind, path) = resource.split_once('/')?;
        (!path.is_empty()).then_some(Self { region, account, kind, path })
    }
}

/// Whether `name` is 1–255 letters, digits, `-` and `_` (cluster, service, family and container
/// names).
pub(crate) fn is_name(name: &str) -> bool {
    (1..=255).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_split() {
        let keys = EcsKeys::new("us-east-1", "000000000000");
        let arn = keys.task_arn("default", "0123");
        let parsed = EcsArn::parse(&arn).unwrap();
        assert_eq!((parsed.kind, parsed.path), ("task", "default/0123"));
        assert!(keys.is_local(&parsed));
        assert_eq!(EcsArn::parse("arn:aws:vpc-lattice:us-east-1:0:targetgroup/tg-1"), None);
        assert_eq!(EcsArn::parse("web:1"), None);
        assert_eq!(keys.task_definition("web", 7), "ecs/us-east-1/000000000000/taskdef/web/0000000007");
    }

    #[test]
    fn names() {
        assert!(is_name("web_1-a"));
        assert!(!is_name("") && !is_name("a/b") && !is_name(&"a".repeat(256)));
    }
}
