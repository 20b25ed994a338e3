//! How an image URI the SDK sends maps onto a runtime. Image URIs are opaque strings to Clary:
//! nothing is pulled. The SDK's MXNet images are parsed (`<repo>:<version>-<cpu|gpu>-<py>`) and
//! looked up in the framework version table; any other image must name a custom runtime the
//! operator registered.

use crate::runtimes::{
    Mode, Runtime, Runtimes, SERVING_RUNTIME, VERSION_TABLE, builtin, version_row,
};

/// What a training image asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingImage {
    pub framework_version: String,
    pub device: String,
    pub py_version: String,
    pub runtime: Runtime,
    pub mode: Mode,
}

/// What an inference image (`CreateModel.PrimaryContainer.Image`) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingImage {
    pub framework_version: String,
    pub device: String,
    pub runtime: Runtime,
    /// MXNet 1.2 and earlier: the legacy handler signatures (model first in `predict_fn`).
    pub legacy_handlers: bool,
    /// MXNet 1.4 and later (the MMS images): the code travels in `model.tar.gz` under `code/`;
    /// earlier images fetch `SAGEMAKER_SUBMIT_DIRECTORY`.
    pub code_in_model: bool,
}

/// `<registry>/<repo>:<tag>` split into repo and tag.
fn repo_and_tag(image: &str) -> Option<(&str, &str)> {
    image.rsplit('/').next().unwrap_or(image).split_once(':')
}

fn all_versions() -> String {
    VERSION_TABLE
        .iter()
        .flat_map(|r| r.versions.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

fn register_hint(image: &str) -> String {
    format!(
        "To run your own image's environment, register a runtime for it: `clary runtimes add NAME --python PATH --image {image}` (or --requirements FILE)"
    )
}

impl Runtimes {
    /// The custom runtime an image selects: by its name (`my-runtime`, `my-runtime:tag`,
    /// `<registry>/my-runtime:tag`) or by an image URI registered with it.
    pub fn custom_for_image(&self, image: &str) -> Option<Runtime> {
        let customs = self.customs();
        if let Some(rt) = customs.iter().find(|r| r.images.iter().any(|i| i == image)) {
            return Some(rt.clone());
        }
        let last = image.rsplit('/').next().unwrap_or(image);
        let repo = last.split_once(':').map_or(last, |(r, _)| r);
        customs.into_iter().find(|r| r.name == repo)
    }

    /// Maps `AlgorithmSpecification.TrainingImage` (e.g.
    /// `763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38`) to a
    /// runtime, or says clearly why it can't.
    pub fn training_image(&self, image: &str) -> Result<TrainingImage, String> {
        if let Some(rt) = self.custom_for_image(image) {
            return Ok(TrainingImage {
                framework_version: rt.mxnet.clone(),
                device: device_of(image),
                py_version: String::new(),
                runtime: rt,
                mode: Mode::Script,
            });
        }
        let supported = || {
            format!(
                "Clary runs the MXNet training images (mxnet-training or sagemaker-mxnet, tag <version>-<cpu|gpu>-<py>) for framework versions {}. {}",
                all_versions(),
                register_hint(image)
            )
        };
        let Some((repo, tag)) = repo_and_tag(image) else {
            return Err(format!(
                "TrainingImage {image:?} has no tag and names no registered runtime. {}",
                supported()
            ));
        };
        if !matches!(
            repo,
            "mxnet-training" | "sagemaker-mxnet" | "sagemaker-mxnet-training"
        ) {
            return Err(format!(
                "TrainingImage {image:?} is not an MXNet training image and names no registered runtime. {}",
                supported()
            ));
        }
        let mut parts = tag.split('-');
        let (version, device, py) = match (parts.next(), parts.next(), parts.next()) {
            (Some(v), Some(d), Some(p)) if matches!(d, "cpu" | "gpu") => (v, d, p),
            _ => {
                return Err(format!(
                    "TrainingImage tag {tag:?} is not <version>-<cpu|gpu>-<py>. {}",
                    supported()
                ));
            }
        };
        let row = version_row(version).ok_or_else(|| {
            format!(
                "MXNet framework version {version:?} is not available here. {}",
                supported()
            )
        })?;
        Ok(TrainingImage {
            framework_version: version.to_string(),
            device: device.to_string(),
            py_version: py.to_string(),
            runtime: builtin(row.runtime).expect("the version table names built-in runtimes"),
            mode: row.mode,
        })
    }

    /// Maps an inference image URI (`mxnet-inference`, `sagemaker-mxnet-serving`, the pre-1.4
    /// `sagemaker-mxnet`, and their `-eia` variants; tag `<version>-<cpu|gpu>-<py>`, or
    /// `1.0`-style tags of the oldest images), or a registered custom runtime, to a runtime.
    pub fn serving_image(&self, image: &str) -> Result<ServingImage, String> {
        if let Some(rt) = self.custom_for_image(image) {
            return Ok(ServingImage {
                framework_version: rt.mxnet.clone(),
                device: device_of(image),
                runtime: rt,
                legacy_handlers: false,
                // The model's code/ and, when the SDK names one, the s3:// submit directory.
                code_in_model: false,
            });
        }
        let supported = || {
            format!(
                "Clary serves the MXNet inference images (mxnet-inference, sagemaker-mxnet-serving, sagemaker-mxnet, and their -eia variants) for framework versions {}. {}",
                all_versions(),
                register_hint(image)
            )
        };
        let Some((repo, tag)) = repo_and_tag(image) else {
            return Err(format!(
                "Image {image:?} has no tag and names no registered runtime. {}",
                supported()
            ));
        };
        let repo = repo.strip_suffix("-eia").unwrap_or(repo);
        if !matches!(
            repo,
            "mxnet-inference" | "sagemaker-mxnet-serving" | "sagemaker-mxnet" | "mxnet-training"
        ) {
            return Err(format!(
                "Image {image:?} is not an MXNet inference image and names no registered runtime. {}",
                supported()
            ));
        }
        let version = tag.split('-').next().unwrap_or_default();
        if version_row(version).is_none() {
            return Err(format!(
                "MXNet framework version {version:?} is not available for serving here. {}",
                supported()
            ));
        }
        let numeric: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
        let at_least = |major: u32, minor: u32| {
            (
                numeric.first().copied().unwrap_or(0),
                numeric.get(1).copied().unwrap_or(0),
            ) >= (major, minor)
        };
        Ok(ServingImage {
            framework_version: version.to_string(),
            device: device_of(image),
            runtime: builtin(SERVING_RUNTIME).expect("the serving runtime is built in"),
            legacy_handlers: !at_least(1, 3),
            code_in_model: at_least(1, 4),
        })
    }
}

/// `gpu` when the tag says so; everything else runs on CPU.
fn device_of(image: &str) -> String {
    let gpu = repo_and_tag(image).is_some_and(|(_, tag)| tag.split('-').any(|p| p == "gpu"));
    if gpu { "gpu" } else { "cpu" }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rts() -> (tempfile::TempDir, Runtimes) {
        let dir = tempfile::tempdir().unwrap();
        let rts = Runtimes::new(dir.path().to_path_buf());
        (dir, rts)
    }

    #[test]
    fn maps_sdk_training_image_uris() {
        let (_d, rts) = rts();
        let r = rts
            .training_image(
                "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38",
            )
            .unwrap();
        assert_eq!(
            (r.framework_version.as_str(), r.runtime.name.as_str()),
            ("1.9.0", "mxnet-1.9")
        );
        let r = rts
            .training_image(
                "520713654638.dkr.ecr.us-east-1.amazonaws.com/sagemaker-mxnet:1.3.0-cpu-py3",
            )
            .unwrap();
        assert_eq!(
            (r.py_version.as_str(), r.runtime.name.as_str()),
            ("py3", "mxnet-1.3")
        );
        let r = rts.training_image("mxnet-training:1.8-gpu-py37").unwrap();
        assert_eq!(
            (r.device.as_str(), r.runtime.mxnet.as_str()),
            ("gpu", "1.8.0")
        );
        let legacy = rts
            .training_image("x/sagemaker-mxnet:1.2.1-cpu-py2")
            .unwrap();
        assert_eq!(
            (legacy.mode, legacy.runtime.name.as_str()),
            (Mode::Legacy, "mxnet-1.3")
        );
        let other = rts
            .training_image("x/pytorch-training:2.0-cpu-py310")
            .unwrap_err();
        assert!(
            other.contains("not an MXNet") && other.contains("clary runtimes add"),
            "{other}"
        );
        assert!(
            rts.training_image("x/mxnet-training:2.5.0-cpu-py38")
                .unwrap_err()
                .contains("not available")
        );
    }

    #[test]
    fn maps_serving_images_to_the_serving_runtime() {
        let (_d, rts) = rts();
        let s = rts
            .serving_image("520713654638.dkr.ecr.us-east-1.amazonaws.com/sagemaker-mxnet-serving-eia:1.4.0-cpu-py3")
            .unwrap();
        assert!(s.code_in_model && !s.legacy_handlers);
        let s = rts.serving_image("x/sagemaker-mxnet:1.0").unwrap();
        assert!(s.legacy_handlers && !s.code_in_model);
        assert_eq!(s.runtime.name, SERVING_RUNTIME);
        assert!(rts.serving_image("x/other:1.0").is_err());
    }
}
