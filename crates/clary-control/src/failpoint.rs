//! Named points where a fault drill can make the server die, as `kill -9` would, at the one
//! moment a random kill rarely hits: `CLARY_FAILPOINT=<name>` aborts the process there. Unset
//! (always, outside the drill) a point costs one load of a cached value.

use std::sync::OnceLock;

/// Just after an endpoint instance's model server was started, before its handle is saved.
pub const AFTER_INSTANCE_LAUNCH: &str = "after-instance-launch";
/// Just after a training job's agents were started, before their handles are saved.
pub const AFTER_JOB_LAUNCH: &str = "after-job-launch";

pub fn hit(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("CLARY_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
