//! The Slurm executor: a training job is one `sbatch` whose batch script `srun`s one
//! `clary agent --from-control` per node; the agents fetch their host specs and reach the
//! objects over HTTP, so nothing is assumed shared between the server and the nodes but the
//! `clary` binary's path. Slurm's view of a job comes from `scontrol show job -o`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What an instance type asks of Slurm; an unlisted type takes whole nodes (`--exclusive`),
/// as an instance is a whole machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmShape {
    pub cpus_per_task: Option<u32>,
    pub mem: Option<String>,
    pub gres: Option<String>,
}

impl SlurmShape {
    /// Parses `cpus=4,mem=8G,gres=gpu:1` (any subset).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut shape = SlurmShape::default();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not key=value (cpus=, mem=, gres=)"))?;
            match k {
                "cpus" => {
                    shape.cpus_per_task = Some(
                        v.parse()
                            .map_err(|_| format!("cpus={v:?} is not a whole number"))?,
                    )
                }
                "mem" => shape.mem = Some(v.to_string()),
                "gres" => shape.gres = Some(v.to_string()),
                _ => return Err(format!("unknown key {k:?} (cpus=, mem=, gres=)")),
            }
        }
        Ok(shape)
    }

    fn flags(&self) -> Vec<String> {
        if *self == SlurmShape::default() {
            return vec!["--exclusive".into()];
        }
        let mut f = Vec::new();
        if let Some(c) = self.cpus_per_task {
            f.push(format!("--cpus-per-task={c}"));
        }
        if let Some(m) = &self.mem {
            f.push(format!("--mem={m}"));
        }
        if let Some(g) = &self.gres {
            f.push(format!("--gres={g}"));
        }
        f
    }
}

#[derive(Debug, Clone, Default)]
pub struct SlurmConfig {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Extra `sbatch` flags, as given.
    pub extra_flags: Vec<String>,
    /// Instance type → resources.
    pub shapes: BTreeMap<String, SlurmShape>,
    /// Where on each node the agents keep their jobs' directories.
    pub node_dir: PathBuf,
    /// Where `sbatch --output` writes each Slurm job's own output (the agents' stderr).
    pub output_dir: PathBuf,
}

/// Slurm's state of a job, from `scontrol show job -o`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmJobState {
    pub state: String,
    pub reason: String,
    pub exit_code: String,
    pub nodes: String,
}

impl SlurmJobState {
    /// Still queued or running.
    pub fn is_active(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PENDING"
                | "CONFIGURING"
                | "RUNNING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
        )
    }

    /// Ended by the machine rather than by the job itself: worth a retry.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.state.as_str(),
            "NODE_FAIL" | "PREEMPTED" | "BOOT_FAIL" | "DEADLINE"
        )
    }
}

/// `Key=Value` fields of a one-line `scontrol show` record.
fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

pub fn parse_job_state(line: &str) -> Option<SlurmJobState> {
    let f = fields(line);
    Some(SlurmJobState {
        state: f.get("JobState")?.to_string(),
        reason: f.get("Reason").copied().unwrap_or("None").to_string(),
        exit_code: f.get("ExitCode").copied().unwrap_or("0:0").to_string(),
        nodes: f.get("NodeList").copied().unwrap_or("").to_string(),
    })
}

/// A `sacct -P -o State,Reason,ExitCode,NodeList` line (`CANCELLED by 0` keeps its first word).
pub fn parse_sacct_line(line: &str) -> Option<SlurmJobState> {
    let mut f = line.split('|');
    let state = f.next()?.split_whitespace().next()?.to_string();
    Some(SlurmJobState {
        state,
        reason: f.next().unwrap_or("None").to_string(),
        exit_code: f.next().unwrap_or("0:0").to_string(),
        nodes: f.next().unwrap_or("").to_string(),
    })
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run {shown}: {e} (is Slurm's client installed?)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Single-quotes a word for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

/// What one `sbatch` starts.
pub struct Submission<'a> {
    /// `clary-<training job>` or `clary-ep-<endpoint>-<instance>`: how Clary's jobs are found.
    pub name: String,
    pub nodes: u32,
    pub instance_type: &'a str,
    /// Slurm's time limit; `None` leaves the partition's default (an endpoint runs until
    /// it is deleted).
    pub time_limit_secs: Option<u64>,
    /// The command each node runs (`srun` starts one per node).
    pub command: Vec<String>,
    /// Variables the command needs beyond the submitting environment (credentials).
    pub env: Vec<(String, String)>,
    /// Where the job's output goes, instead of `<output dir>/slurm-<id>.out`.
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct SlurmExecutor {
    pub config: SlurmConfig,
}

impl SlurmExecutor {
    /// The `sbatch` arguments of a submission (everything but the script on stdin).
    pub fn sbatch_args(&self, s: &Submission<'_>) -> Vec<String> {
        let output = s
            .output
            .clone()
            .unwrap_or_else(|| self.config.output_dir.join("slurm-%j.out"));
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", s.name),
            format!("--nodes={}", s.nodes),
            "--ntasks-per-node=1".into(),
            format!("--output={}", output.display()),
        ];
        if let Some(secs) = s.time_limit_secs {
            args.push(format!("--time={}", secs.div_ceil(60).max(1)));
        }
        if let Some(p) = &self.config.partition {
            args.push(format!("--partition={p}"));
        }
        if let Some(a) = &self.config.account {
            args.push(format!("--account={a}"));
        }
        args.extend(
            self.config
                .shapes
                .get(s.instance_type)
                .cloned()
                .unwrap_or_default()
                .flags(),
        );
        let mut export = "--export=ALL".to_string();
        for (k, _) in &s.env {
            export.push(',');
            export.push_str(k);
        }
        args.push(export);
        args.extend(self.config.extra_flags.iter().cloned());
        args
    }

    /// Submits; returns Slurm's job id.
    pub fn submit(&self, s: &Submission<'_>) -> Result<u64, String> {
        std::fs::create_dir_all(&self.config.output_dir)
            .map_err(|e| format!("creating {}: {e}", self.config.output_dir.display()))?;
        let quoted: Vec<String> = s.command.iter().map(|w| sh_quote(w)).collect();
        // One task per node; a failing task does not take the others down (the control plane
        // decides what a failed host means for the job).
        let script = format!(
            "#!/bin/sh\nexec srun --ntasks-per-node=1 --kill-on-bad-exit=0 {}\n",
            quoted.join(" ")
        );
        // sbatch hands its environment to the job's nodes: not the server's secrets.
        let mut child = crate::server_secrets::withhold(&mut Command::new("sbatch"))
            .args(self.sbatch_args(s))
            .envs(s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not run sbatch: {e} (is Slurm's client installed?)"))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing the batch script to sbatch: {e}"))?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "sbatch refused the job: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .split(';')
            .next()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| format!("sbatch printed no job id: {text:?}"))
    }

    /// Slurm's state of a job, or `None` when Slurm no longer knows it: `scontrol` while the
    /// controller remembers the job (`MinJobAge` after its end), then `sacct` where accounting
    /// is kept.
    pub fn state(&self, id: u64) -> Option<SlurmJobState> {
        let live = run(Command::new("scontrol").args(["show", "job", "-o", &id.to_string()]))
            .ok()
            .and_then(|out| parse_job_state(out.lines().next()?));
        live.or_else(|| {
            let out = run(Command::new("sacct").args([
                "-n",
                "-P",
                "-X",
                "-o",
                "State,Reason,ExitCode,NodeList",
                "-j",
                &id.to_string(),
            ]))
            .ok()?;
            parse_sacct_line(out.lines().next()?)
        })
    }

    /// The ids of this user's pending or running jobs named `name`.
    pub fn active_jobs_named(&self, name: &str) -> Vec<u64> {
        run(Command::new("squeue").args(["-h", "--me", "-n", name, "-o", "%i"]))
            .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// `scancel --signal=<signal>` (the job's steps, the agents, get it) or a plain `scancel`.
    pub fn cancel(&self, id: u64, signal: Option<&str>) {
        let mut cmd = Command::new("scancel");
        if let Some(s) = signal {
            cmd.arg(format!("--signal={s}"));
        }
        let _ = run(cmd.arg(id.to_string()));
    }

    /// The node names of a node list (`n[1-3]` → n1, n2, n3), in Slurm's order.
    pub fn hostnames(node_list: &str) -> Result<Vec<String>, String> {
        Ok(
            run(Command::new("scontrol").args(["show", "hostnames", node_list]))?
                .lines()
                .map(str::to_string)
                .filter(|l| !l.is_empty())
                .collect(),
        )
    }

    /// A node's address (`NodeAddr`).
    pub fn node_address(node: &str) -> Result<String, String> {
        let out = run(Command::new("scontrol").args(["show", "node", "-o", node]))?;
        fields(&out)
            .get("NodeAddr")
            .map(|a| a.to_string())
            .ok_or_else(|| format!("scontrol shows no NodeAddr for {node}"))
    }

    /// `sinfo` and `squeue` as text, for `clary cluster status`.
    pub fn overview() -> Result<(String, String), String> {
        let nodes = run(Command::new("sinfo").args(["-N", "-o", "%N %P %T %c %m %E"]))?;
        let queue = run(Command::new("squeue").args(["-o", "%i %j %T %D %M %l %R"]))?;
        Ok((nodes, queue))
    }
}

/// Where an agent on a node keeps a job: `<node dir>/<job>/<host>`.
pub fn node_job_dir(node_dir: &Path, job: &str, host: &str) -> PathBuf {
    node_dir.join(job).join(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_from_scontrol_one_line_records() {
        let s = parse_job_state("JobId=7 JobName=clary-x UserId=root(0) JobState=PENDING Reason=Resources Dependency=(null) ExitCode=0:0 NodeList=(null)").unwrap();
        assert_eq!(
            (s.state.as_str(), s.reason.as_str()),
            ("PENDING", "Resources")
        );
        assert!(s.is_active() && !s.is_transient());
        let s = parse_job_state(
            "JobId=8 JobState=NODE_FAIL Reason=NodeDown ExitCode=0:0 NodeList=n[1-2]",
        )
        .unwrap();
        assert!(!s.is_active() && s.is_transient());
        assert_eq!(s.nodes, "n[1-2]");
        assert!(parse_job_state("garbage").is_none());
        let s = parse_sacct_line("CANCELLED by 0|None|0:15|n1").unwrap();
        assert_eq!(
            (s.state.as_str(), s.exit_code.as_str()),
            ("CANCELLED", "0:15")
        );
        assert!(parse_sacct_line("").is_none());
    }

    #[test]
    fn sbatch_gets_shapes_time_and_the_exported_names_only() {
        let mut config = SlurmConfig {
            partition: Some("gpu".into()),
            extra_flags: vec!["--qos=high".into()],
            output_dir: "/out".into(),
            ..SlurmConfig::default()
        };
        config.shapes.insert(
            "ml.p3.2xlarge".into(),
            SlurmShape::parse("cpus=8,mem=61G,gres=gpu:1").unwrap(),
        );
        let exec = SlurmExecutor { config };
        let sub = |it| Submission {
            name: "clary-j".into(),
            nodes: 2,
            instance_type: it,
            time_limit_secs: Some(61),
            command: vec!["clary".into()],
            env: vec![("CLARY_AGENT_SECRET_KEY".into(), "s3cret".into())],
            output: None,
        };
        let a = exec.sbatch_args(&sub("ml.p3.2xlarge"));
        for want in [
            "--nodes=2",
            "--time=2",
            "--partition=gpu",
            "--cpus-per-task=8",
            "--mem=61G",
            "--gres=gpu:1",
            "--qos=high",
            "--export=ALL,CLARY_AGENT_SECRET_KEY",
        ] {
            assert!(a.contains(&want.to_string()), "{want} missing from {a:?}");
        }
        assert!(!a.iter().any(|x| x.contains("s3cret")));
        assert!(
            exec.sbatch_args(&sub("ml.c5.xlarge"))
                .contains(&"--exclusive".to_string())
        );
        assert!(SlurmShape::parse("cpu=1").is_err());
    }
}
