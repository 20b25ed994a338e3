//! What an agent or model server must not inherit from the server's environment: the
//! server's own key pair and the external store's. A host gets its own scoped key in its spec
//! (and presigned URLs for the store); anything it inherited, the user code it runs could read.

use std::process::Command;

/// Variables that may carry the server's or the store's credentials.
pub const SERVER_SECRETS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "CLARY_ACCESS_KEY",
    "CLARY_SECRET_KEY",
    "CLARY_OBJECT_STORE_ACCESS_KEY",
    "CLARY_OBJECT_STORE_SECRET_KEY",
];

/// `cmd` without [`SERVER_SECRETS`] in the environment it passes on.
pub fn withhold(cmd: &mut Command) -> &mut Command {
    for name in SERVER_SECRETS {
        cmd.env_remove(name);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_gets_none_of_the_servers_secrets() {
        let mut cmd = Command::new("env");
        cmd.env("AWS_SECRET_ACCESS_KEY", "store-secret")
            .env("CLARY_SECRET_KEY", "server-secret")
            .env("KEPT", "yes");
        let out = withhold(&mut cmd).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("KEPT=yes"));
        assert!(
            !text.contains("store-secret") && !text.contains("server-secret"),
            "{text}"
        );
    }
}
