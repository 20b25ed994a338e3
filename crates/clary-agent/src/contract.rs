//! What a training script sees (docs/contract.md §2–§5): the `/opt/ml` layout, the three config
//! files, the `SM_*` environment and the hyperparameter arguments, byte-identical to the AWS
//! training toolkit (sagemaker-training 5.1.4), which the test suite runs as an oracle.

use crate::pyvalue::{Py, decode_hyperparameter};
use clary_exec::protocol::HostSpec;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Hyperparameters the toolkit treats as SageMaker's even without the `sagemaker_` prefix test
/// (and which never count as "additional framework parameters").
const SAGEMAKER_HYPERPARAMETERS: &[&str] = &[
    "sagemaker_program",
    "sagemaker_submit_directory",
    "sagemaker_enable_cloudwatch_metrics",
    "sagemaker_region",
    "sagemaker_container_log_level",
    "sagemaker_job_name",
    "default_user_module_name",
    "_tuning_objective_metric",
    "sagemaker_s3_output",
];

/// Framework flags that make the current group a distribution group (TT environment.py).
const DISTRIBUTION_FLAGS: &[&str] = &[
    "sagemaker_mpi_enabled",
    "sagemaker_parameter_server_enabled",
    "sagemaker_distributed_dataparallel_enabled",
    "sagemaker_pytorch_ddp_enabled",
    "sagemaker_pytorch_xla_multi_worker_enabled",
    "sagemaker_multi_worker_mirrored_strategy_enabled",
    "sagemaker_torch_distributed_enabled",
];

pub const GROUP_NAME: &str = "homogeneousCluster";

/// A channel's name becomes a directory under `input/data`: refuse anything that is not one
/// plain name there (the API validates the same; a host spec is checked again here because it
/// is a file on disk, and `..` would let a channel overwrite `input/config`).
pub fn check_channel_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "channel name {name:?} is not valid: it must match [A-Za-z0-9\\.\\-_]+, be at most 64 characters and not be '.' or '..'"
        ))
    }
}

/// The paths of the per-job `/opt/ml` stand-in.
#[derive(Debug, Clone)]
pub struct Layout {
    pub base: PathBuf,
}

impl Layout {
    pub fn input(&self) -> PathBuf {
        self.base.join("input")
    }
    pub fn config(&self) -> PathBuf {
        self.base.join("input/config")
    }
    pub fn data(&self) -> PathBuf {
        self.base.join("input/data")
    }
    pub fn channel(&self, name: &str) -> PathBuf {
        self.data().join(name)
    }
    pub fn model(&self) -> PathBuf {
        self.base.join("model")
    }
    pub fn output(&self) -> PathBuf {
        self.base.join("output")
    }
    pub fn output_data(&self) -> PathBuf {
        self.base.join("output/data")
    }
    pub fn intermediate(&self) -> PathBuf {
        self.base.join("output/intermediate")
    }
    pub fn code(&self) -> PathBuf {
        self.base.join("code")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.base.join("checkpoints")
    }

    pub fn create(&self, channels: &[String]) -> std::io::Result<()> {
        for d in [
            self.config(),
            self.model(),
            self.output_data(),
            self.intermediate(),
            self.code(),
            self.checkpoints(),
        ] {
            std::fs::create_dir_all(d)?;
        }
        for c in channels {
            check_channel_name(c)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            std::fs::create_dir_all(self.channel(c))?;
        }
        Ok(())
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn strs(v: &[String]) -> Py {
    Py::List(v.iter().map(|s| Py::Str(s.clone())).collect())
}

/// Converts a serde JSON value to its Python form (for the config objects).
fn from_json(v: &Value) -> Py {
    match v {
        Value::Null => Py::None,
        Value::Bool(b) => Py::Bool(*b),
        Value::Number(n) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() => Py::Float(f),
            _ => Py::Int(n.to_string()),
        },
        Value::String(s) => Py::Str(s.clone()),
        Value::Array(a) => Py::List(a.iter().map(from_json).collect()),
        Value::Object(m) => Py::Dict(m.iter().map(|(k, v)| (k.clone(), from_json(v))).collect()),
    }
}

/// Everything derived from the spec that the script can observe.
#[derive(Debug, Clone)]
pub struct TrainingContract {
    pub layout: Layout,
    pub resource_config: Value,
    pub input_data_config: Value,
    /// User hyperparameters, decoded, in the order the toolkit would hold them.
    pub user_hps: Vec<(String, Py)>,
    pub entry_point: String,
    pub module_name: String,
    /// The raw `sagemaker_submit_directory` (often an `s3://` URI).
    pub module_dir: String,
    pub log_level: Py,
    pub additional_framework_params: Vec<(String, Py)>,
    pub num_cpus: usize,
    pub num_gpus: usize,
}

impl TrainingContract {
    pub fn new(spec: &HostSpec, num_cpus: usize, num_gpus: usize) -> Self {
        let layout = Layout {
            base: spec.base_dir.clone(),
        };
        let resource_config = json!({
            "current_host": spec.current_host,
            "current_instance_type": spec.instance_type,
            "current_group_name": GROUP_NAME,
            "hosts": spec.hosts,
            "instance_groups": [{"instance_group_name": GROUP_NAME, "instance_type": spec.instance_type, "hosts": spec.hosts}],
            "network_interface_name": "eth0",
        });
        let input_data_config = Value::Object(
            spec.channels
                .iter()
                .map(|c| (c.name.clone(), c.config.clone()))
                .collect(),
        );
        let mut user_hps = Vec::new();
        let mut sm_hps: Vec<(String, Py)> = Vec::new();
        for (k, raw) in &spec.hyperparameters {
            let v = decode_hyperparameter(raw);
            if k.starts_with("sagemaker_") || SAGEMAKER_HYPERPARAMETERS.contains(&k.as_str()) {
                sm_hps.push((k.clone(), v));
            } else {
                user_hps.push((k.clone(), v));
            }
        }
        let sm = |k: &str| sm_hps.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let entry_point = spec
            .environment
            .get("SAGEMAKER_PROGRAM")
            .cloned()
            .or_else(|| sm("sagemaker_program").map(|v| v.py_str()))
            .unwrap_or_default();
        let module_name = entry_point
            .strip_suffix(".py")
            .unwrap_or(&entry_point)
            .to_string();
        let module_dir = sm("sagemaker_submit_directory")
            .map(|v| v.py_str())
            .unwrap_or_else(|| path_str(&layout.code()));
        let log_level = sm("sagemaker_container_log_level").unwrap_or(Py::Int("20".into()));
        let additional_framework_params = sm_hps
            .iter()
            .filter(|(k, _)| !SAGEMAKER_HYPERPARAMETERS.contains(&k.as_str()))
            .cloned()
            .collect();
        TrainingContract {
            layout,
            resource_config,
            input_data_config,
            user_hps,
            entry_point,
            module_name,
            module_dir,
            log_level,
            additional_framework_params,
            num_cpus,
            num_gpus,
        }
    }

    fn framework_flag(&self, name: &str) -> bool {
        self.additional_framework_params.iter().any(|(k, v)| {
            k == name
                && !matches!(v, Py::Bool(false) | Py::None)
                && *v != Py::Int("0".into())
                && *v != Py::Str(String::new())
        })
    }

    /// The command-line arguments (TT `mapping.to_cmd_args`).
    pub fn cmd_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (k, v) in Py::sorted_items(&self.user_hps) {
            args.push(match k.chars().count() {
                0 => String::new(),
                1 => format!("-{k}"),
                _ => format!("--{k}"),
            });
            args.push(match v {
                Py::None => String::new(),
                Py::Dict(items) => Py::sorted_items(items)
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.py_str()))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.py_str(),
            });
        }
        args
    }

    /// `SM_TRAINING_ENV`'s object (TT `Environment.__iter__`).
    fn training_env(&self, spec: &HostSpec, framework_module: &str) -> Py {
        let hosts = &spec.hosts;
        let distribution_groups: Vec<String> =
            if DISTRIBUTION_FLAGS.iter().any(|f| self.framework_flag(f)) {
                vec![GROUP_NAME.to_string()]
            } else {
                vec![]
            };
        let distribution_hosts: Vec<String> = if distribution_groups.is_empty() {
            vec![]
        } else {
            hosts.clone()
        };
        let master = distribution_hosts
            .first()
            .or(hosts.first())
            .cloned()
            .unwrap_or_default();
        let channel_dirs = Py::Dict(
            spec.channels
                .iter()
                .map(|c| {
                    (
                        c.name.clone(),
                        Py::Str(path_str(&self.layout.channel(&c.name))),
                    )
                })
                .collect(),
        );
        let group = Py::Dict(vec![
            ("hosts".into(), strs(hosts)),
            ("instance_group_name".into(), Py::Str(GROUP_NAME.into())),
            ("instance_type".into(), Py::Str(spec.instance_type.clone())),
        ]);
        let l = &self.layout;
        let job_name = spec.job_name.clone();
        Py::Dict(vec![
            (
                "additional_framework_parameters".into(),
                Py::Dict(self.additional_framework_params.clone()),
            ),
            ("channel_input_dirs".into(), channel_dirs),
            ("current_host".into(), Py::Str(spec.current_host.clone())),
            ("current_instance_group".into(), Py::Str(GROUP_NAME.into())),
            ("current_instance_group_hosts".into(), strs(hosts)),
            (
                "current_instance_type".into(),
                Py::Str(spec.instance_type.clone()),
            ),
            ("distribution_hosts".into(), strs(&distribution_hosts)),
            (
                "distribution_instance_groups".into(),
                strs(&distribution_groups),
            ),
            ("framework_module".into(), Py::Str(framework_module.into())),
            ("hosts".into(), strs(hosts)),
            ("hyperparameters".into(), Py::Dict(self.user_hps.clone())),
            ("input_config_dir".into(), Py::Str(path_str(&l.config()))),
            (
                "input_data_config".into(),
                from_json(&self.input_data_config),
            ),
            ("input_dir".into(), Py::Str(path_str(&l.input()))),
            ("instance_groups".into(), strs(&[GROUP_NAME.to_string()])),
            (
                "instance_groups_dict".into(),
                Py::Dict(vec![(GROUP_NAME.into(), group)]),
            ),
            ("is_hetero".into(), Py::Bool(false)),
            ("is_master".into(), Py::Bool(spec.current_host == master)),
            ("is_modelparallel_enabled".into(), Py::None),
            ("is_smddpmprun_installed".into(), Py::Bool(false)),
            ("is_smddprun_installed".into(), Py::Bool(false)),
            ("job_name".into(), Py::Str(job_name)),
            ("log_level".into(), self.log_level.clone()),
            ("master_hostname".into(), Py::Str(master)),
            ("model_dir".into(), Py::Str(path_str(&l.model()))),
            ("module_dir".into(), Py::Str(self.module_dir.clone())),
            ("module_name".into(), Py::Str(self.module_name.clone())),
            ("network_interface_name".into(), Py::Str("eth0".into())),
            ("num_cpus".into(), Py::Int(self.num_cpus.to_string())),
            ("num_gpus".into(), Py::Int(self.num_gpus.to_string())),
            ("num_neurons".into(), Py::Int("0".into())),
            (
                "output_data_dir".into(),
                Py::Str(path_str(&l.output_data())),
            ),
            ("output_dir".into(), Py::Str(path_str(&l.output()))),
            (
                "output_intermediate_dir".into(),
                Py::Str(path_str(&l.intermediate())),
            ),
            ("resource_config".into(), from_json(&self.resource_config)),
            ("topology".into(), Py::List(vec![])),
            ("user_entry_point".into(), Py::Str(self.entry_point.clone())),
        ])
    }

    /// The `SM_*` variables (TT `Environment.to_env_vars` through `mapping.to_env_vars`), sorted.
    pub fn sm_env(&self, spec: &HostSpec, framework_module: &str) -> BTreeMap<String, String> {
        let training_env = self.training_env(spec, framework_module);
        let Py::Dict(te) = &training_env else {
            unreachable!("training_env builds a dict")
        };
        let get = |k: &str| {
            te.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or(Py::None)
        };
        let mut vars: Vec<(String, Py)> = vec![
            ("hosts".into(), get("hosts")),
            (
                "network_interface_name".into(),
                get("network_interface_name"),
            ),
            ("hps".into(), get("hyperparameters")),
            ("user_entry_point".into(), get("user_entry_point")),
            (
                "framework_params".into(),
                get("additional_framework_parameters"),
            ),
            ("resource_config".into(), get("resource_config")),
            ("input_data_config".into(), get("input_data_config")),
            ("output_data_dir".into(), get("output_data_dir")),
            ("channels".into(), {
                let mut names: Vec<String> = spec.channels.iter().map(|c| c.name.clone()).collect();
                names.sort();
                strs(&names)
            }),
            ("current_host".into(), get("current_host")),
            ("current_instance_type".into(), get("current_instance_type")),
            (
                "current_instance_group".into(),
                get("current_instance_group"),
            ),
            (
                "current_instance_group_hosts".into(),
                get("current_instance_group_hosts"),
            ),
            ("instance_groups".into(), get("instance_groups")),
            ("instance_groups_dict".into(), get("instance_groups_dict")),
            (
                "distribution_instance_groups".into(),
                get("distribution_instance_groups"),
            ),
            ("is_hetero".into(), get("is_hetero")),
            ("module_name".into(), get("module_name")),
            ("log_level".into(), get("log_level")),
            ("framework_module".into(), get("framework_module")),
            ("input_dir".into(), get("input_dir")),
            ("input_config_dir".into(), get("input_config_dir")),
            ("output_dir".into(), get("output_dir")),
            ("num_cpus".into(), get("num_cpus")),
            ("num_gpus".into(), get("num_gpus")),
            ("num_neurons".into(), get("num_neurons")),
            ("model_dir".into(), get("model_dir")),
            ("module_dir".into(), get("module_dir")),
            ("training_env".into(), training_env.clone()),
            ("user_args".into(), strs(&self.cmd_args())),
            (
                "output_intermediate_dir".into(),
                get("output_intermediate_dir"),
            ),
        ];
        for c in &spec.channels {
            vars.push((
                format!("channel_{}", c.name),
                Py::Str(path_str(&self.layout.channel(&c.name))),
            ));
        }
        for (k, v) in &self.user_hps {
            vars.push((format!("hp_{k}"), v.clone()));
        }
        vars.into_iter()
            .map(|(k, v)| {
                let value = match v {
                    Py::Str(s) => s,
                    Py::None => String::new(),
                    other => other.json_compact_sorted(),
                };
                (format!("SM_{}", k.to_uppercase()), value)
            })
            .collect()
    }

    /// Writes `hyperparameters.json`, `resourceconfig.json` and `inputdataconfig.json`.
    pub fn write_config_files(&self, spec: &HostSpec) -> std::io::Result<()> {
        let dir = self.layout.config();
        std::fs::create_dir_all(&dir)?;
        let write = |name: &str, v: &Value| {
            std::fs::write(dir.join(name), serde_json::to_vec(v).unwrap_or_default())
        };
        write("hyperparameters.json", &json!(spec.hyperparameters))?;
        write("resourceconfig.json", &self.resource_config)?;
        write("inputdataconfig.json", &self.input_data_config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_cannot_name_the_data_dir_or_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            base: dir.path().join("opt_ml"),
        };
        for bad in ["..", ".", "", "a/b", "../config"] {
            let e = layout.create(&[bad.to_string()]).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
        }
        layout
            .create(&["train".into(), "...".into(), ".v-1_x".into()])
            .unwrap();
        assert!(layout.channel("...").is_dir());
    }

    #[test]
    fn args_match_the_toolkits_verified_example() {
        // docs/contract.md §5, verified with sagemaker-training 5.1.4.
        let hps: Vec<(String, Py)> = [
            ("batch-size", "128"),
            ("lr", "0.01"),
            ("use_gpu", "true"),
            ("opt", "\"sgd\""),
            ("lst", "[1, 2, 3]"),
            ("nested", r#"{"a": 1, "b": [1, 2]}"#),
            ("none_val", "null"),
            ("x", "1"),
            ("_ps_port", "\"8000\""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), decode_hyperparameter(v)))
        .collect();
        let c = TrainingContract {
            layout: Layout {
                base: "/opt/ml".into(),
            },
            resource_config: json!({}),
            input_data_config: json!({}),
            user_hps: hps,
            entry_point: "train.py".into(),
            module_name: "train".into(),
            module_dir: String::new(),
            log_level: Py::Int("20".into()),
            additional_framework_params: vec![],
            num_cpus: 1,
            num_gpus: 0,
        };
        assert_eq!(
            c.cmd_args(),
            [
                "--_ps_port",
                "8000",
                "--batch-size",
                "128",
                "--lr",
                "0.01",
                "--lst",
                "[1, 2, 3]",
                "--nested",
                "a=1,b=[1, 2]",
                "--none_val",
                "",
                "--opt",
                "sgd",
                "--use_gpu",
                "True",
                "-x",
                "1"
            ]
        );
    }
}
