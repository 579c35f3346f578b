//! Checks of where tasks go: an `awsvpc` network configuration against the EC2 API's records
//! (subnets and security groups exist and share one VPC), and a service's
//! `vpcLatticeConfigurations` against VPC Lattice's (an IP target group in that VPC, a port name
//! of the task definition, an infrastructure role: [`check_role`]).

use trellis_model::ec2::{SecurityGroup, Subnet};
use trellis_model::ecs::{NetworkConfiguration, TaskDefinition, VpcLatticeConfiguration};
use trellis_model::lattice::TargetGroup;
use trellis_model::{Arn, Kind};

use super::{EcsError, Req};
use crate::iam::RoleProblem;
use crate::keys::Keys;
use crate::repo;

/// Lattice configurations per service.
const MAX_LATTICE_CONFIGURATIONS: usize = 5;

/// Checks a task's network against its definition: `awsvpc` definitions need an
/// `awsvpcConfiguration` whose subnets (1–16) and security groups (0–5) exist in one VPC;
/// others take none. Answers that VPC (`None` for other network modes).
pub(super) async fn check_network(
    req: &Req<'_>,
    def: &TaskDefinition,
    network: Option<&NetworkConfiguration>,
) -> Result<Option<String>, EcsError> {
    let awsvpc = network.and_then(|n| n.awsvpc_configuration.as_ref());
    let config = match (def.network_mode.as_deref() == Some("awsvpc"), awsvpc) {
        (true, Some(config)) => config,
        (true, None) => {
            return Err(EcsError::invalid(
                "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
            ));
        }
        (false, Some(_)) => {
            return Err(EcsError::invalid(
                "Network Configuration is not valid for the given networkMode of this task definition.",
            ));
        }
        (false, None) => return Ok(None),
    };
    if config.subnets.is_empty() {
        return Err(EcsError::invalid("subnets can not be empty."));
    }
    if config.subnets.len() > 16 {
        return Err(EcsError::invalid("subnets can have at most 16 items."));
    }
    if config.security_groups.len() > 5 {
        return Err(EcsError::invalid("securityGroups can have at most 5 items."));
    }
    if let Some(ip) = &config.assign_public_ip
        && !matches!(ip.as_str(), "ENABLED" | "DISABLED")
    {
        return Err(EcsError::invalid(format!("Invalid assignPublicIp: {ip}")));
    }
    let keys = Keys::new(req.keys.region(), req.keys.account());
    let mut vpc: Option<String> = None;
    for id in &config.subnets {
        let subnet = match Kind::Subnet.is_id(id) {
            true => repo::load::<Subnet>(req.store(), &keys.res(Kind::Subnet, id)).await?,
            false => None,
        };
        let Some(subnet) = subnet else {
            return Err(EcsError::invalid(format!(
                "Error retrieving subnet information for [{id}]: The subnet ID '{id}' does not exist (ErrorCode: InvalidSubnetID.NotFound)"
            )));
        };
        match &vpc {
            Some(v) if *v != subnet.value.vpc_id => {
                return Err(EcsError::invalid("The subnets must all belong to the same VPC."));
            }
            _ => vpc = Some(subnet.value.vpc_id),
        }
    }
    let vpc = vpc.unwrap_or_default();
    for id in &config.security_groups {
        let group = match Kind::SecurityGroup.is_id(id) {
            true => repo::load::<SecurityGroup>(req.store(), &keys.res(Kind::SecurityGroup, id)).await?,
            false => None,
        };
        let Some(group) = group else {
            return Err(EcsError::invalid(format!(
                "Error retrieving security group information for [{id}]: The security group '{id}' does not exist (ErrorCode: InvalidGroup.NotFound)"
            )));
        };
        if group.value.vpc_id != vpc {
            return Err(EcsError::invalid(format!(
                "Security group {id} does not belong to the VPC of the subnets ({vpc})."
            )));
        }
    }
    Ok(Some(vpc))
}

/// Checks a service's Lattice configurations: at most five; each with an infrastructure role,
/// an existing IP target group (by ARN) in the tasks' VPC, and a `portName` naming one of the
/// task definition's `portMappings`.
pub(super) async fn check_lattice(
    req: &Req<'_>,
    configs: &[VpcLatticeConfiguration],
    def: &TaskDefinition,
    vpc: Option<&str>,
) -> Result<(), EcsError> {
    if configs.is_empty() {
        return Ok(());
    }
    if configs.len() > MAX_LATTICE_CONFIGURATIONS {
        return Err(EcsError::invalid(format!(
            "vpcLatticeConfigurations can have at most {MAX_LATTICE_CONFIGURATIONS} items."
        )));
    }
    let Some(vpc) = vpc else {
        return Err(EcsError::invalid(
            "VPC Lattice configurations require a task definition with networkMode 'awsvpc'.",
        ));
    };
    for config in configs {
        check_role(req, &config.role_arn).await?;
        let tg = find_target_group(req, &config.target_group_arn).await?;
        let arn = &config.target_group_arn;
        if tg.target_type != "IP" {
            return Err(EcsError::invalid(format!(
                "The target group {arn} is of type {}; Amazon ECS services need target groups of type IP.",
                tg.target_type
            )));
        }
        let tg_vpc = tg.config.as_ref().and_then(|c| c.vpc_identifier.as_deref()).unwrap_or_default();
        if tg_vpc != vpc {
            return Err(EcsError::invalid(format!(
                "The target group {arn} is in VPC {tg_vpc}, not in the VPC of the service's subnets ({vpc})."
            )));
        }
        let named = def
            .container_definitions
            .iter()
            .flat_map(|c| &c.port_mappings)
            .any(|p| p.name.as_deref() == Some(config.port_name.as_str()));
        if !named {
            return Err(EcsError::invalid(format!(
                "The portName {} does not match a portMappings name in task definition {}.",
                config.port_name, def.task_definition_arn
            )));
        }
    }
    Ok(())
}

/// Checks the infrastructure role ECS assumes to manage a service's Lattice targets: an IAM role
/// ARN, of a role that exists, trusts `ecs.amazonaws.com`, and may register, deregister and list
/// targets (the managed policy `AmazonECSInfrastructureRolePolicyForVpcLattice` grants that).
async fn check_role(req: &Req<'_>, role_arn: &str) -> Result<(), EcsError> {
    let invalid = || EcsError::invalid(format!("Invalid role ARN: {role_arn} is not the ARN of an IAM role."));
    let arn = Arn::parse(role_arn).ok_or_else(invalid)?;
    let name = arn.resource.strip_prefix("role/").ok_or_else(invalid)?;
    let account_ok = arn.account.len() == 12 && arn.account.bytes().all(|b| b.is_ascii_digit());
    let name_ok = name.rsplit('/').next().is_some_and(|n| !n.is_empty() && n.len() <= 64);
    if arn.service != "iam" || !arn.region.is_empty() || !account_ok || !name_ok {
        return Err(invalid());
    }
    let checked = crate::iam::check_infrastructure_role(req.store(), &req.ctx.account, role_arn)
        .await
        .map_err(|e| EcsError::Server(e.to_string()))?;
    match checked {
        Ok(()) => Ok(()),
        Err(RoleProblem::NotFound | RoleProblem::NotTrusted) => Err(EcsError::invalid(format!(
            "Unable to assume the infrastructure role {role_arn}. Please verify that the role exists and that its \
             trust policy allows ecs.amazonaws.com to assume it."
        ))),
        Err(RoleProblem::MissingPermissions) => Err(EcsError::invalid(format!(
            "The infrastructure role {role_arn} does not allow Amazon ECS to manage VPC Lattice targets \
             (vpc-lattice:RegisterTargets, DeregisterTargets, GetTargetGroup, ListTargets). Attach the managed policy \
             AmazonECSInfrastructureRolePolicyForVpcLattice."
        ))),
    }
}

/// The target group a `targetGroupArn` names, in this region and account.
async fn find_target_group(req: &Req<'_>, arn: &str) -> Result<TargetGroup, EcsError> {
    let missing = || EcsError::invalid(format!("The target group {arn} does not exist."));
    let parsed = Arn::parse(arn)
        .filter(|a| a.service == "vpc-lattice")
        .ok_or_else(|| EcsError::invalid(format!("Invalid targetGroupArn: {arn}")))?;
    let id = match parsed.lattice_path().as_deref() {
        Some([(Kind::TargetGroup, id)]) if Kind::TargetGroup.is_id(id) => (*id).to_owned(),
        _ => return Err(EcsError::invalid(format!("Invalid targetGroupArn: {arn}"))),
    };
    if parsed.region != req.keys.region() || parsed.account != req.keys.account() {
        return Err(missing());
    }
    let keys = Keys::new(req.keys.region(), req.keys.account());
    let tg = repo::load::<TargetGroup>(req.store(), &keys.res(Kind::TargetGroup, &id)).await?.ok_or_else(missing)?;
    Ok(tg.value)
}
