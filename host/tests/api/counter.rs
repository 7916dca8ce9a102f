//! The counter-side features: coupon campaigns under a hard cap, the offline member pass,
//! offline purchase sync, and risk controls.

mod campaigns;
mod offline;
mod passes;
mod risk;
pub(crate) mod support;
