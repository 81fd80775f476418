//! Placeholder: the Winsock side of this model is being built (issue #5).

pub(crate) use crate::models::unsupported::{availability, run};

pub(crate) const MECHANISM: &str = "none on this OS yet";
