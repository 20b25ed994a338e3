//! A job that names its own command (a training job's `ContainerEntrypoint` and
//! `ContainerArguments`, a processing job's `AppSpecification`): run as a container runs its
//! entrypoint with its arguments, instead of the framework toolkit's entry, with everything else
//! the host gives a script: the job's environment, channels and config files under `/opt/ml`
//! (which such commands use as written, so the host's directory must be bound there, see
//! [`crate::network::HostIdentity::bind_opt_ml`]), log shipping, stop and
//! `MaxRuntimeInSeconds`.
//!
//! The command finds the runtime's `python3` and `pip` first on `PATH`, in an environment of
//! the job's own layered over the runtime: a `pip install` in the job lands there, never in the
//! runtime other jobs share.

use crate::runner::{RunContext, RunEnd, run_process};
use clary_exec::protocol::ContainerCommand;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Makes the job's Python environment at `venv`, layered over the runtime of
/// `runtime_python`, with `pip` and `pip3` commands beside its `python3` (the venv is made
/// without pip's scripts; pip itself comes from the runtime). Returns its interpreter, whose
/// directory goes first on the command's `PATH`.
pub fn prepare_python(runtime_python: &Path, venv: &Path) -> Result<PathBuf, String> {
    let python = clary_exec::runtimes::create_layered_venv(runtime_python, venv)?;
    let bin = venv.join("bin");
    for name in ["pip", "pip3"] {
        let path = bin.join(name);
        let text = format!(
            "#!/bin/sh\n# pip of this job's environment (layered over the runtime): what it installs stays in the job.\nexec '{}' -m pip \"$@\"\n",
            python.display().to_string().replace('\'', "'\\''")
        );
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("making {} executable: {e}", path.display()))?;
    }
    Ok(python)
}

/// The program and its arguments: the entrypoint's first string, then the rest of the
/// entrypoint, then the arguments (Docker's ENTRYPOINT and CMD).
pub fn command_line(command: &ContainerCommand) -> Option<(String, Vec<String>)> {
    let (program, rest) = command.entrypoint.split_first()?;
    let mut argv = rest.to_vec();
    argv.extend(command.arguments.iter().cloned());
    Some((program.clone(), argv))
}

/// Runs the job's command to its end. The caller has bound the host's directory at `/opt/ml`
/// for `ctx.identity`'s processes (a command is refused otherwise: it would not find its
/// files) and put the environment's `bin` first on `env`'s `PATH`.
pub async fn run(
    command: &ContainerCommand,
    env: &BTreeMap<String, String>,
    ctx: RunContext<'_>,
) -> RunEnd {
    let Some((program, argv)) = command_line(command) else {
        return RunEnd::SpawnFailed("the job's ContainerEntrypoint is empty".into());
    };
    if !ctx.identity.opt_ml_bound() {
        return RunEnd::SpawnFailed(format!(
            "the job's ContainerEntrypoint needs this host's directory at {}, and this host could not bind it there",
            crate::network::OPT_ML
        ));
    }
    let quoted: Vec<String> = std::iter::once(program.as_str())
        .chain(argv.iter().map(String::as_str))
        .map(crate::runner::shell_quote)
        .collect();
    ctx.log.info(&format!(
        "Running the job's ContainerEntrypoint and ContainerArguments (instead of the training toolkit) in {}:\n\n{}\n",
        crate::network::OPT_ML,
        quoted.join(" ")
    ));
    run_process(&program, &argv, env, ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entrypoint_then_arguments_as_docker_runs_them() {
        let c = ContainerCommand {
            entrypoint: vec!["/bin/bash".into(), "-e".into()],
            arguments: vec!["-c".into(), "echo 'a b'".into()],
        };
        assert_eq!(
            command_line(&c),
            Some((
                "/bin/bash".to_string(),
                vec!["-e".to_string(), "-c".into(), "echo 'a b'".into()]
            ))
        );
        let none = ContainerCommand {
            entrypoint: vec![],
            arguments: vec!["x".into()],
        };
        assert_eq!(command_line(&none), None);
    }
}
