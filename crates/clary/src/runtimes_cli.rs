//! `clary runtimes`: the framework version table, the runtimes behind it, and the operator's
//! custom runtimes (what a custom `image_uri` selects).

use anyhow::{Result, bail};
use clap::Subcommand;
use clary_exec::runtimes::{
    Install, Mode, Runtime, Runtimes, SERVING_RUNTIME, VERSION_TABLE, builtin, builtins,
};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum RuntimesCommand {
    /// Show the framework version table and every runtime (built-in and custom).
    List,
    /// Build a runtime now instead of at its first job.
    Build { name: String },
    /// Register a custom runtime; an `image_uri` naming it (`NAME`, `NAME:tag`,
    /// `<registry>/NAME:tag`) or one of its `--image` URIs then trains and serves on it.
    Add {
        name: String,
        /// An existing Python interpreter with MXNet installed.
        #[arg(
            long,
            conflicts_with = "requirements",
            required_unless_present = "requirements"
        )]
        python: Option<PathBuf>,
        /// A pip requirements file (it must install mxnet); Clary builds a venv from it now.
        #[arg(long)]
        requirements: Option<PathBuf>,
        /// An exact image URI that selects this runtime (repeatable).
        #[arg(long = "image")]
        images: Vec<String>,
    },
    /// Unregister a custom runtime.
    Remove { name: String },
}

pub fn run(dir: PathBuf, command: RuntimesCommand) -> Result<()> {
    let rts = Runtimes::new(dir);
    match command {
        RuntimesCommand::List => {
            list(&rts);
            Ok(())
        }
        RuntimesCommand::Build { name } => {
            let Some(rt) = rts.find(&name) else {
                bail!("no runtime {name:?}; `clary runtimes` lists them");
            };
            let python = with_spinner(|progress| rts.ensure(&rt, progress))?;
            println!("runtime {name} ready: {}", python.display());
            Ok(())
        }
        RuntimesCommand::Add {
            name,
            python,
            requirements,
            images,
        } => {
            let source = match (python, requirements) {
                (Some(p), _) => Install::Interpreter(p),
                (None, Some(r)) => Install::Requirements(r),
                (None, None) => bail!("give --python PATH or --requirements FILE"),
            };
            let rt = with_spinner(|progress| rts.add_custom(&name, source, images, progress))?;
            println!(
                "custom runtime {} registered: MXNet {} at {}; image_uri {:?} (or {}:<tag>) selects it",
                rt.name,
                rt.mxnet,
                rts.python(&rt).display(),
                rt.name,
                rt.name
            );
            Ok(())
        }
        RuntimesCommand::Remove { name } => {
            rts.remove_custom(&name).map_err(anyhow::Error::msg)?;
            println!("custom runtime {name} removed");
            Ok(())
        }
    }
}

fn with_spinner<T>(f: impl FnOnce(&mut dyn FnMut(&str)) -> Result<T, String>) -> Result<T> {
    let pb = indicatif::ProgressBar::new_spinner();
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    let out = f(&mut |line| pb.set_message(line.chars().take(100).collect::<String>()));
    pb.finish_and_clear();
    out.map_err(anyhow::Error::msg)
}

fn state(rts: &Runtimes, rt: &Runtime) -> &'static str {
    if rts.is_ready(rt) {
        "ready"
    } else {
        "not built"
    }
}

fn list(rts: &Runtimes) {
    println!("Framework versions (framework_version, or the tag of an MXNet image):");
    println!(
        "  {:<28} {:<10} {:<8} {:<18} NOTE",
        "FRAMEWORK VERSION", "RUNTIME", "MXNET", "TRAINING"
    );
    for row in VERSION_TABLE {
        let mxnet = builtin(row.runtime).map(|r| r.mxnet).unwrap_or_default();
        let training = match row.mode {
            Mode::Script => "script mode",
            Mode::Legacy => "legacy (not yet)",
        };
        println!(
            "  {:<28} {:<10} {:<8} {:<18} {}",
            row.versions.join(", "),
            row.runtime,
            mxnet,
            training,
            row.note
        );
    }
    println!(
        "  Endpoints of every version serve on {SERVING_RUNTIME}; the inference handler API is the same across them."
    );
    println!("\nRuntimes:");
    println!(
        "  {:<16} {:<8} {:<10} {:<9} PYTHON",
        "RUNTIME", "MXNET", "STATE", "KIND"
    );
    let customs = rts.customs();
    for rt in builtins().iter().chain(customs.iter()) {
        let kind = if rt.is_custom() { "custom" } else { "built-in" };
        println!(
            "  {:<16} {:<8} {:<10} {:<9} {}",
            rt.name,
            rt.mxnet,
            state(rts, rt),
            kind,
            rts.python(rt).display()
        );
        for image in &rt.images {
            println!("  {:<16} image {image}", "");
        }
    }
    if customs.is_empty() {
        println!(
            "\nNo custom runtimes. `clary runtimes add NAME --python PATH` registers one for image_uri=NAME."
        );
    }
}
