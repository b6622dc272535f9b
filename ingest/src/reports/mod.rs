//! Reports (issue 14): what a water bureau files every month. Placeholder until the
//! reports module lands on main; only the billing export lives here for now.

pub mod billing;
