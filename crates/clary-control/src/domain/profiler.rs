//! SageMaker Debugger's settings of a training job: the profiler (system monitoring at an
//! interval, written under an S3 output path) and the rules configured against it. Clary runs
//! the system monitor itself; rule evaluator images it does not run, and says so.

use serde::{Deserialize, Serialize};

/// The intervals SageMaker accepts for `ProfilingIntervalInMilliseconds`.
pub const INTERVALS_MS: [u64; 6] = [100, 200, 500, 1000, 5000, 60_000];
/// `ProfilingIntervalInMilliseconds` when the request leaves it out.
pub const DEFAULT_INTERVAL_MS: u64 = 500;
/// The most profiler rules a job may have (`ProfilerRuleConfigurations`' limit).
pub const MAX_RULES: usize = 20;

/// One rule configuration (`ProfilerRuleConfiguration` or `DebugRuleConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleConfig {
    pub name: String,
    pub image: String,
    /// The configuration as the edge received it, for the edge to echo; never read here.
    pub document: String,
}

/// A rule with the time it was configured (epoch milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfiguredRule {
    pub rule: RuleConfig,
    pub configured_at_ms: i64,
}

/// `ProfilerConfig` with SageMaker's defaults filled in, and the rules against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfilerSettings {
    /// The request had a `ProfilerConfig` (or an update gave one).
    pub configured: bool,
    /// System monitoring runs (`ProfilingStatus: Enabled`).
    pub enabled: bool,
    pub interval_ms: u64,
    /// `S3OutputPath`, as given or defaulted.
    pub output_path: String,
    /// `ProfilingParameters`, in the order given.
    pub parameters: Vec<(String, String)>,
    pub rules: Vec<ConfiguredRule>,
}

impl Default for ProfilerSettings {
    fn default() -> Self {
        ProfilerSettings {
            configured: false,
            enabled: false,
            interval_ms: DEFAULT_INTERVAL_MS,
            output_path: String::new(),
            parameters: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// `ProfilerConfig` of a create or an update, as asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfilerRequest {
    pub disable: Option<bool>,
    pub interval_ms: Option<u64>,
    pub output_path: Option<String>,
    pub parameters: Option<Vec<(String, String)>>,
}

impl ProfilerRequest {
    fn changes_settings(&self) -> bool {
        self.interval_ms.is_some() || self.output_path.is_some() || self.parameters.is_some()
    }
}

/// Why a profiler configuration or update is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfilerError {
    #[error(
        "Value {0} at 'profilerConfig.profilingIntervalInMilliseconds' failed to satisfy constraint: Member must be one of [100, 200, 500, 1000, 5000, 60000]"
    )]
    Interval(u64),
    #[error(
        "ProfilerConfig.DisableProfiler cannot be true together with other ProfilerConfig settings or ProfilerRuleConfigurations"
    )]
    DisableWithSettings,
    #[error(
        "ProfilerConfig.S3OutputPath cannot be changed once the profiler is enabled (it is {current})"
    )]
    OutputPathChanged { current: String },
    #[error(
        "ProfilerRuleConfigurations cannot be given while the profiler is disabled; enable it with ProfilerConfig"
    )]
    RulesWhileDisabled,
    #[error(
        "ProfilerRuleConfigurations: a rule named {0:?} is already configured; rules can only be added"
    )]
    DuplicateRule(String),
    #[error("ProfilerRuleConfigurations: a training job has at most {MAX_RULES} profiler rules")]
    TooManyRules,
    #[error("Please provide ProfilerConfig or ProfilerRuleConfigurations to update")]
    NothingToUpdate,
}

fn check_interval(ms: Option<u64>) -> Result<(), ProfilerError> {
    match ms {
        Some(ms) if !INTERVALS_MS.contains(&ms) => Err(ProfilerError::Interval(ms)),
        _ => Ok(()),
    }
}

fn add_rules(
    into: &mut Vec<ConfiguredRule>,
    rules: Vec<RuleConfig>,
    now: f64,
) -> Result<(), ProfilerError> {
    for rule in rules {
        if into.iter().any(|r| r.rule.name == rule.name) {
            return Err(ProfilerError::DuplicateRule(rule.name));
        }
        into.push(ConfiguredRule {
            rule,
            configured_at_ms: (now * 1000.0).round() as i64,
        });
    }
    if into.len() > MAX_RULES {
        return Err(ProfilerError::TooManyRules);
    }
    Ok(())
}

impl ProfilerSettings {
    /// The settings of a new job: `config` as `CreateTrainingJob` gave it (`None` without a
    /// `ProfilerConfig`: profiling is off), `default_output` the SDK's default output path.
    pub fn create(
        config: Option<ProfilerRequest>,
        rules: Vec<RuleConfig>,
        default_output: &str,
        now: f64,
    ) -> Result<Self, ProfilerError> {
        let mut s = ProfilerSettings::default();
        if let Some(c) = config {
            check_interval(c.interval_ms)?;
            s.configured = true;
            s.enabled = c.disable != Some(true);
            s.interval_ms = c.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS);
            s.output_path = c
                .output_path
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| default_output.to_string());
            s.parameters = c.parameters.unwrap_or_default();
        }
        if !rules.is_empty() && !s.enabled {
            return Err(ProfilerError::RulesWhileDisabled);
        }
        add_rules(&mut s.rules, rules, now)?;
        Ok(s)
    }

    /// `UpdateTrainingJob`'s change to a running job's profiler: disable it, or enable it and
    /// change its interval, parameters and (while it was never enabled) its output path, and
    /// add rules. All or nothing.
    pub fn update(
        &mut self,
        config: Option<ProfilerRequest>,
        rules: Vec<RuleConfig>,
        default_output: &str,
        now: f64,
    ) -> Result<(), ProfilerError> {
        let mut next = self.clone();
        match config {
            None if rules.is_empty() => return Err(ProfilerError::NothingToUpdate),
            None => {}
            Some(c) if c.disable == Some(true) => {
                if c.changes_settings() || !rules.is_empty() {
                    return Err(ProfilerError::DisableWithSettings);
                }
                next.configured = true;
                next.enabled = false;
            }
            Some(c) => {
                check_interval(c.interval_ms)?;
                if let Some(path) = c.output_path.as_deref().filter(|p| !p.is_empty()) {
                    if self.enabled && path != self.output_path {
                        return Err(ProfilerError::OutputPathChanged {
                            current: self.output_path.clone(),
                        });
                    }
                    next.output_path = path.to_string();
                }
                if next.output_path.is_empty() {
                    next.output_path = default_output.to_string();
                }
                if let Some(ms) = c.interval_ms {
                    next.interval_ms = ms;
                }
                if let Some(p) = c.parameters {
                    next.parameters = p;
                }
                next.configured = true;
                next.enabled = true;
            }
        }
        if !rules.is_empty() && !next.enabled {
            return Err(ProfilerError::RulesWhileDisabled);
        }
        add_rules(&mut next.rules, rules, now)?;
        *self = next;
        Ok(())
    }

    /// What an agent monitors: `None` while profiling is off.
    pub fn monitoring(&self) -> Option<u64> {
        self.enabled.then_some(self.interval_ms)
    }
}

/// How a configured rule's evaluation stands: Clary runs no rule evaluator images, so every
/// rule is `Error` with the reason (never a made-up verdict).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleEvaluation {
    pub name: String,
    pub status: &'static str,
    pub details: String,
    pub last_modified_time: f64,
}

/// The evaluation status of `rules`.
pub fn evaluations(rules: &[ConfiguredRule]) -> Vec<RuleEvaluation> {
    rules
        .iter()
        .map(|r| RuleEvaluation {
            name: r.rule.name.clone(),
            status: "Error",
            details: format!(
                "Clary does not run rule evaluator images: rule {} (image {}) was not evaluated",
                r.rule.name, r.rule.image
            ),
            last_modified_time: r.configured_at_ms as f64 / 1000.0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "s3://sagemaker-us-east-1-000000000000/";

    fn rule(name: &str) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            image: "img".into(),
            document: "{}".into(),
        }
    }

    fn asked(interval: Option<u64>, path: Option<&str>, disable: Option<bool>) -> ProfilerRequest {
        ProfilerRequest {
            disable,
            interval_ms: interval,
            output_path: path.map(str::to_string),
            parameters: None,
        }
    }

    #[test]
    fn create_fills_in_defaults_and_refuses_odd_intervals() {
        let s =
            ProfilerSettings::create(Some(asked(None, None, None)), vec![], DEFAULT, 1.0).unwrap();
        assert!(s.enabled && s.configured);
        assert_eq!((s.interval_ms, s.output_path.as_str()), (500, DEFAULT));
        let off = ProfilerSettings::create(None, vec![], DEFAULT, 1.0).unwrap();
        assert!(!off.enabled && !off.configured && off.monitoring().is_none());
        let disabled =
            ProfilerSettings::create(Some(asked(None, None, Some(true))), vec![], DEFAULT, 1.0)
                .unwrap();
        assert!(!disabled.enabled && disabled.configured);
        assert_eq!(
            ProfilerSettings::create(Some(asked(Some(300), None, None)), vec![], DEFAULT, 1.0),
            Err(ProfilerError::Interval(300))
        );
        for ms in INTERVALS_MS {
            let s =
                ProfilerSettings::create(Some(asked(Some(ms), None, None)), vec![], DEFAULT, 0.0)
                    .unwrap();
            assert_eq!(s.monitoring(), Some(ms));
        }
    }

    #[test]
    fn updates_change_the_interval_keep_the_path_and_add_rules() {
        let mut s = ProfilerSettings::create(
            Some(asked(None, Some("s3://b/p"), None)),
            vec![rule("a")],
            DEFAULT,
            1.0,
        )
        .unwrap();
        s.update(
            Some(asked(Some(1000), None, Some(false))),
            vec![rule("b")],
            DEFAULT,
            2.0,
        )
        .unwrap();
        assert_eq!((s.interval_ms, s.output_path.as_str()), (1000, "s3://b/p"));
        assert_eq!(s.rules.len(), 2);
        assert_eq!(s.rules[1].configured_at_ms, 2000);
        let before = s.clone();
        assert_eq!(
            s.update(
                Some(asked(None, Some("s3://b/other"), None)),
                vec![],
                DEFAULT,
                3.0
            ),
            Err(ProfilerError::OutputPathChanged {
                current: "s3://b/p".into()
            })
        );
        assert_eq!(
            s.update(None, vec![rule("a")], DEFAULT, 3.0),
            Err(ProfilerError::DuplicateRule("a".into()))
        );
        assert_eq!(
            s.update(Some(asked(Some(7), None, None)), vec![], DEFAULT, 3.0),
            Err(ProfilerError::Interval(7))
        );
        assert_eq!(s, before, "a refused update changes nothing");
        assert_eq!(
            s.update(None, vec![], DEFAULT, 3.0),
            Err(ProfilerError::NothingToUpdate)
        );
    }

    #[test]
    fn disable_then_enable_again() {
        let mut s = ProfilerSettings::create(None, vec![], DEFAULT, 1.0).unwrap();
        assert_eq!(
            s.update(None, vec![rule("r")], DEFAULT, 2.0),
            Err(ProfilerError::RulesWhileDisabled)
        );
        s.update(Some(asked(None, None, Some(false))), vec![], DEFAULT, 2.0)
            .unwrap();
        assert_eq!(s.monitoring(), Some(500));
        assert_eq!(s.output_path, DEFAULT);
        assert_eq!(
            s.update(
                Some(asked(Some(100), None, Some(true))),
                vec![],
                DEFAULT,
                3.0
            ),
            Err(ProfilerError::DisableWithSettings)
        );
        s.update(Some(asked(None, None, Some(true))), vec![], DEFAULT, 3.0)
            .unwrap();
        assert_eq!(s.monitoring(), None);
        assert_eq!(
            s.output_path, DEFAULT,
            "the path is kept for a later enable"
        );
    }

    #[test]
    fn every_rule_is_reported_as_not_evaluated() {
        let s = ProfilerSettings::create(
            Some(asked(None, None, None)),
            vec![rule("ProfilerReport")],
            DEFAULT,
            5.0,
        )
        .unwrap();
        let [e] = evaluations(&s.rules).try_into().unwrap();
        assert_eq!((e.name.as_str(), e.status), ("ProfilerReport", "Error"));
        assert!(e.details.contains("does not run rule evaluator images"));
        assert_eq!(e.last_modified_time, 5.0);
    }
}
