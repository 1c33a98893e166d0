//! Runs the active health checks of a snapshot's providers (`pool.health_check_interval`):
//! one task per provider on the control runtime, a probe at once and then every interval,
//! stopping when the snapshot is dropped (a reload starts the next snapshot's).

use std::sync::{Arc, Weak};

use crate::gateway::Gateway;
use crate::policy::probe::probe;

/// Starts the health checks of `gw`'s providers that have them.
pub fn start(gw: &Arc<Gateway>) {
    for (i, p) in gw.config.providers.iter().enumerate() {
        let Some(every) = p.pool.health_check_interval else { continue };
        let timeout = p.pool.health_check_timeout;
        let weak: Weak<Gateway> = Arc::downgrade(gw);
        tokio::spawn(async move {
            loop {
                let Some(gw) = weak.upgrade() else { return };
                let (target, secrets) = (gw.targets[i].clone(), gw.secrets.clone());
                // The snapshot is not held across the probe: a reload may drop it meanwhile.
                drop(gw);
                if probe(&target, &secrets, timeout).await.is_none() {
                    return; // Its kind has no model list to probe.
                }
                drop(target);
                tokio::time::sleep(every).await;
            }
        });
    }
}
