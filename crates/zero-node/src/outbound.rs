//! The operator's ceiling on the outgoing hosts a deployment may ask for.

use zeroproxy::{HostsError, OutboundConfig};

use crate::apps::Refusal;

/// Refuses a deployment whose `allowed_outbound_hosts` is malformed (`InvalidArgs`) or asks
/// for more than `[outbound] allowed_hosts_ceiling` (`OutboundHostNotAllowed`, naming the host
/// and the knob).
pub(crate) fn check_deploy(config: &OutboundConfig, hosts: &[String]) -> Result<(), Refusal> {
    config.check_hosts(hosts).map_err(|e| match e {
        HostsError::Invalid(_) => Refusal::new(400, "InvalidArgs", e.to_string()),
        HostsError::AboveCeiling { .. } => {
            Refusal::new(403, "OutboundHostNotAllowed", e.to_string())
        }
    })
}
