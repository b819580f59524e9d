//! The account's Fargate vCPU quotas (Service Quotas), against the most
//! workers the stack may run, before anything is made or changed. A quota
//! that cannot be read (no permission, an emulator without the API) is
//! said, and not checked: ECS would then refuse to place the tasks beyond
//! it, which the cluster line shows.

use fossa_contract::aws::AwsResultExt;
use fossa_contract::config::check_fargate_quota;
use fossa_contract::limits::{
    FARGATE_ON_DEMAND_VCPU_QUOTA, FARGATE_QUOTA_SERVICE, FARGATE_SPOT_VCPU_QUOTA,
};

use super::Launcher;
use crate::{Error, Result};

/// Why a quota's value was not read.
#[derive(Debug, thiserror::Error)]
enum Unread {
    /// Service Quotas refused or failed.
    #[error(transparent)]
    Aws(#[from] fossa_contract::aws::AwsError),
    /// It answered without a value.
    #[error("{0} has no value")]
    NoValue(String),
    /// Not asked (Spot's quota without `--spot`).
    #[error("not asked")]
    NotAsked,
}

impl Launcher<'_> {
    /// The value of quota `code`, or why it could not be read.
    async fn fargate_quota(&self, code: &str) -> std::result::Result<f64, Unread> {
        let out = self
            .c
            .quotas
            .get_service_quota()
            .service_code(FARGATE_QUOTA_SERVICE)
            .quota_code(code)
            .send()
            .await
            .aws("servicequotas:GetServiceQuota", code)?;
        out.quota()
            .and_then(|q| q.value())
            .ok_or_else(|| Unread::NoValue(code.to_owned()))
    }
}

/// Refuses `most` workers of `cpu` units (placed as `spot` places them)
/// beyond the account's Fargate vCPU quotas in this region.
pub async fn check(l: &Launcher<'_>, most: u32, cpu: u32, spot: bool) -> Result<()> {
    let on_demand = l.fargate_quota(FARGATE_ON_DEMAND_VCPU_QUOTA).await;
    let on_spot = if spot {
        l.fargate_quota(FARGATE_SPOT_VCPU_QUOTA).await
    } else {
        Err(Unread::NotAsked)
    };
    match &on_demand {
        Ok(q) => l.p.note(&format!(
            "Fargate On-Demand vCPU quota: {q} ({most} workers of {cpu} CPU units may run)"
        )),
        Err(why) => l.p.note(&format!(
            "the Fargate vCPU quota could not be read, so it is not checked: {}",
            fossa_contract::aws::chain(why)
        )),
    }
    check_fargate_quota(most, cpu, spot, on_demand.ok(), on_spot.ok(), &l.c.region)
        .map_err(|e| Error::Usage(e.to_string()))
}
