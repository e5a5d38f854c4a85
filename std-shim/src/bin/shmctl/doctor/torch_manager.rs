//! Which manager torch will run, from `shmctl torch status`'s report.

use std::path::Path;

use crate::json::Json;
use crate::torch::{Identity, Report, TorchError, find_python, locate};

use super::finding::{Finding, Severity};

/// The finding, and whether torch runs ours (`None` when no torch was found).
pub(crate) fn check(python: Option<&Path>) -> (Finding, Option<bool>) {
    let finding =
        |severity, found| Finding::new("torch_manager", "torch's manager", severity, found);
    let report = find_python(python)
        .and_then(|python| locate(&python))
        .and_then(Report::inspect);
    let report = match report {
        Ok(report) => report,
        Err(err @ (TorchError::NoPythonOnPath | TorchError::NoTorch { .. }))
            if python.is_none() =>
        {
            let (cause, _) = err.cause_and_fix();
            let finding = finding(Severity::Ok, format!("{cause}: nothing to check"))
                .fix("to check the torch of another python: shmctl doctor --python /path/to/venv/bin/python");
            return (finding, None);
        }
        Err(err) => {
            let (cause, fix) = err.cause_and_fix();
            let finding = finding(Severity::Warning, cause);
            return (
                if fix.is_empty() {
                    finding
                } else {
                    finding.fix(fix)
                },
                None,
            );
        }
    };
    let site = &report.site;
    let prefix = format!(
        "torch {} ({}) runs {}",
        site.version,
        site.python.display(),
        site.manager().display()
    );
    let install = format!("shmctl torch install {}", report.python_arg());
    let running: Vec<Json> = report
        .running
        .iter()
        .map(|(pid, identity)| {
            Json::Object(vec![
                ("pid", (*pid).into()),
                ("runs", identity.to_string().into()),
            ])
        })
        .collect();
    let detail = |finding: Finding| {
        finding
            .detail("python", site.python.display().to_string())
            .detail("torch", site.package.display().to_string())
            .detail("torch_version", site.version.as_str())
            .detail("manager", site.manager().display().to_string())
            .detail("runs", report.live.as_ref().map(ToString::to_string))
            .detail("ours", report.runs_ours())
            .detail("backup", report.backup.as_ref().map(ToString::to_string))
            .detail("running", Json::Array(running.clone()))
    };
    let finding = match &report.live {
        Some(live) if live.is_ours() => finding(Severity::Ok, format!("{prefix}:\n{live}")),
        Some(live) if report.ours_was_replaced() => finding(
            Severity::Warning,
            format!("{prefix}:\n{live} again: a torch upgrade or reinstall put it back over ours"),
        )
        .fix(install),
        Some(live @ Identity::Pytorch(_)) => finding(
            Severity::Ok,
            format!("{prefix}:\n{live}; ours also reaps the segments of dead workers: {install}"),
        ),
        Some(live) => finding(Severity::Warning, format!("{prefix}:\n{live}")).fix(format!(
            "check what put it there; `{install}` for ours, or `pip install --force-reinstall \
             --no-deps torch=={}` for PyTorch's",
            site.version
        )),
        None => finding(
            Severity::Error,
            format!("{prefix}, which is missing: import torch fails"),
        )
        .fix(format!(
            "`{install}`, or `pip install --force-reinstall --no-deps torch=={}`",
            site.version
        )),
    };
    (detail(finding), Some(report.runs_ours()))
}
