//! Hourly list prices (us-east-1, on demand), for the overview's cost estimate.

/// Fargate, per vCPU-hour.
pub const FARGATE_VCPU_HOUR: f64 = 0.040_48;
/// Fargate, per GB-hour.
pub const FARGATE_GB_HOUR: f64 = 0.004_445;
/// A t3.small gateway instance.
pub const T3_SMALL_HOUR: f64 = 0.020_8;
/// A managed NAT Gateway, before data processing charges.
pub const NAT_GATEWAY_HOUR: f64 = 0.045;
