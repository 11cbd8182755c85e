//! What a card takes from an MLflow run directory (the file store's layout:
//! `<run>/metrics/<key>` files of "timestamp value step" lines, `<run>/meta.yaml`,
//! and the logged model's `MLmodel`): the final value of each metric, and the
//! ids that lead back to the run and the model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::CardWriteError;

#[derive(Debug, Clone, Default)]
pub struct MlflowRun {
    pub run_id: Option<String>,
    pub experiment_id: Option<String>,
    pub model_uuid: Option<String>,
    pub model_id: Option<String>,
    pub mlflow_version: Option<String>,
    pub mlmodel: Option<PathBuf>,
    /// Each metric's value at its last step.
    pub metrics: BTreeMap<String, f64>,
}

/// The keys of `meta.yaml` and `MLmodel` a card records.
#[derive(Debug, Default, serde::Deserialize)]
struct Meta {
    run_id: Option<String>,
    run_uuid: Option<String>,
    experiment_id: Option<serde_yaml_ng::Value>,
    model_uuid: Option<String>,
    model_id: Option<String>,
    mlflow_version: Option<String>,
}

impl MlflowRun {
    pub fn read(dir: &Path) -> Result<Self, CardWriteError> {
        let fail = |message: String| CardWriteError::Mlflow {
            path: dir.display().to_string(),
            message,
        };
        let metrics_dir = dir.join("metrics");
        if !metrics_dir.is_dir() {
            return Err(fail(
                "has no metrics folder: give the run's own folder (mlruns/<experiment id>/<run id>)"
                    .into(),
            ));
        }
        let mut run = Self::default();
        if let Some(meta) = read_yaml(&dir.join("meta.yaml")).map_err(&fail)? {
            run.run_id = meta.run_id.or(meta.run_uuid);
            run.experiment_id = meta.experiment_id.map(|v| match v {
                serde_yaml_ng::Value::String(s) => s,
                other => serde_yaml_ng::to_string(&other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            });
        }
        run.metrics = read_metrics(&metrics_dir).map_err(&fail)?;
        if let Some(path) = find_mlmodel(dir) {
            if let Some(mlmodel) = read_yaml(&path).map_err(&fail)? {
                run.model_uuid = mlmodel.model_uuid;
                run.model_id = mlmodel.model_id;
                run.mlflow_version = mlmodel.mlflow_version;
                run.run_id = run.run_id.or(mlmodel.run_id);
            }
            run.mlmodel = Some(path);
        }
        Ok(run)
    }

    /// The `training.mlflow` entry of the card.
    pub fn provenance(&self) -> serde_json::Value {
        let mut entry = serde_json::Map::new();
        let mut put = |key: &str, value: &Option<String>| {
            if let Some(v) = value {
                entry.insert(key.into(), v.clone().into());
            }
        };
        put("run_id", &self.run_id);
        put("experiment_id", &self.experiment_id);
        put("model_uuid", &self.model_uuid);
        put("model_id", &self.model_id);
        put("mlflow_version", &self.mlflow_version);
        entry.into()
    }
}

fn read_yaml(path: &Path) -> Result<Option<Meta>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    serde_yaml_ng::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{} is not valid YAML: {e}", path.display()))
}

/// One file per metric key (a key with "/" in it is a path of folders),
/// one line per logged value: "timestamp value step"; the value at the
/// highest step (the latest timestamp within it), as MLflow reads it.
fn read_metrics(folder: &Path) -> Result<BTreeMap<String, f64>, String> {
    let mut metrics = BTreeMap::new();
    let mut folders = vec![(folder.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = folders.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let key = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if path.is_dir() {
                folders.push((path, format!("{key}/")));
            } else if let Some(value) = last_value(&path)? {
                metrics.insert(key, value);
            }
        }
    }
    Ok(metrics)
}

fn last_value(path: &Path) -> Result<Option<f64>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut last: Option<((i64, i64), f64)> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let parsed = match parts.as_slice() {
            [ts, value, step, ..] => ts
                .parse()
                .ok()
                .zip(value.parse().ok())
                .zip(step.parse().ok()),
            [ts, value] => ts.parse().ok().zip(value.parse().ok()).map(|t| (t, 0)),
            _ => None,
        };
        let Some(((ts, value), step)) = parsed else {
            return Err(format!(
                "{}: {line:?} is not \"timestamp value step\"",
                path.display()
            ));
        };
        if last.is_none_or(|(at, _)| (step, ts) >= at) {
            last = Some(((step, ts), value));
        }
    }
    Ok(last.map(|(_, value)| value))
}

/// The run's logged model: `MLmodel` in the run folder or under its
/// artifacts (MLflow 2), or under the experiment's `models/<id>/artifacts`
/// with this run as its source (MLflow 3's logged models).
fn find_mlmodel(run: &Path) -> Option<PathBuf> {
    let direct = run.join("MLmodel");
    if direct.is_file() {
        return Some(direct);
    }
    let mut folders = vec![(run.join("artifacts"), 0)];
    while let Some((folder, depth)) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && depth < 3 {
                folders.push((path, depth + 1));
            } else if entry.file_name() == "MLmodel" {
                return Some(path);
            }
        }
    }
    let run_id = run.file_name()?.to_string_lossy().into_owned();
    let models = run.parent()?.join("models");
    for entry in std::fs::read_dir(models).ok()?.flatten() {
        let mlmodel = entry.path().join("artifacts").join("MLmodel");
        let meta = entry.path().join("meta.yaml");
        let from_this_run = std::fs::read_to_string(&meta)
            .is_ok_and(|t| t.contains(&format!("source_run_id: {run_id}")));
        if mlmodel.is_file() && from_this_run {
            return Some(mlmodel);
        }
    }
    None
}
