//! One check's result: how bad, what was found, the exact fix, and the
//! numbers behind it for `--json`.

use std::fmt::Write as _;

use crate::json::Json;

/// How a check came out. Ordered: the worst decides the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Severity {
    Ok,
    Warning,
    Error,
}

impl Severity {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }

    /// `shmctl doctor`'s exit status: 0 healthy, 1 warnings, 2 errors.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Warning => 1,
            Self::Error => 2,
        }
    }
}

/// One check's result.
#[derive(Clone, Debug)]
pub(crate) struct Finding {
    /// Stable key for `--json`.
    pub(crate) id: &'static str,
    /// What was checked, for the screen.
    pub(crate) title: &'static str,
    pub(crate) severity: Severity,
    /// What was found, in a sentence (more lines for lists).
    pub(crate) found: String,
    /// What to do, when something should be done.
    pub(crate) fix: Option<String>,
    /// The measurements, for `--json`.
    pub(crate) details: Vec<(&'static str, Json)>,
}

impl Finding {
    pub(crate) fn new(
        id: &'static str,
        title: &'static str,
        severity: Severity,
        found: String,
    ) -> Self {
        Self {
            id,
            title,
            severity,
            found,
            fix: None,
            details: Vec::new(),
        }
    }

    pub(crate) fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    pub(crate) fn detail(mut self, key: &'static str, value: impl Into<Json>) -> Self {
        self.details.push((key, value.into()));
        self
    }

    fn to_json(&self) -> Json {
        Json::Object(vec![
            ("id", self.id.into()),
            ("title", self.title.into()),
            ("status", self.severity.as_str().into()),
            ("found", self.found.as_str().into()),
            ("fix", self.fix.clone().into()),
            ("details", Json::Object(self.details.clone())),
        ])
    }
}

/// The worst severity among the findings.
pub(crate) fn overall(findings: &[Finding]) -> Severity {
    findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Ok)
}

/// The screen: one block per check, `fix:` under what needs one, a verdict.
pub(crate) fn render_text(findings: &[Finding]) -> String {
    const TITLE: usize = 16;
    const STATUS: usize = 9;
    let indent = " ".repeat(STATUS + TITLE);
    let mut out = String::new();
    for finding in findings {
        let status = match finding.severity {
            Severity::Ok => "ok",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
        };
        let mut lines = finding.found.lines();
        let _ = writeln!(
            out,
            "{status:<STATUS$}{:<TITLE$}{}",
            finding.title,
            lines.next().unwrap_or("")
        );
        for line in lines {
            let _ = writeln!(out, "{indent}{line}");
        }
        if let Some(fix) = &finding.fix {
            for (i, line) in fix.lines().enumerate() {
                let lead = if i == 0 { "fix: " } else { "     " };
                let _ = writeln!(out, "{indent}{lead}{line}");
            }
        }
    }
    let count = |severity| findings.iter().filter(|f| f.severity == severity).count();
    let (warnings, errors) = (count(Severity::Warning), count(Severity::Error));
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let _ = match (warnings, errors) {
        (0, 0) => writeln!(out, "\nhealthy: {} checks passed", findings.len()),
        _ => writeln!(
            out,
            "\n{errors} error{}, {warnings} warning{}",
            plural(errors),
            plural(warnings)
        ),
    };
    out
}

/// The `--json` document: the overall status, its exit code, every check.
pub(crate) fn render_json(findings: &[Finding]) -> String {
    let worst = overall(findings);
    let document = Json::Object(vec![
        ("status", worst.as_str().into()),
        ("exit_code", u32::from(worst.exit_code()).into()),
        (
            "checks",
            Json::Array(findings.iter().map(Finding::to_json).collect()),
        ),
    ]);
    format!("{document}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_finding_decides_and_fixes_sit_under_their_finding() {
        let findings = vec![
            Finding::new("a", "first", Severity::Ok, "fine".into()),
            Finding::new(
                "b",
                "second",
                Severity::Warning,
                "line one\nline two".into(),
            )
            .fix("do this")
            .detail("n", 3u32),
        ];
        assert_eq!(overall(&findings), Severity::Warning);
        let text = render_text(&findings);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ok       first           fine");
        assert_eq!(lines[1], "WARNING  second          line one");
        assert_eq!(lines[2], "                         line two");
        assert_eq!(lines[3], "                         fix: do this");
        assert_eq!(lines[5], "0 errors, 1 warning");
        assert_eq!(
            render_json(&findings),
            "{\"status\":\"warning\",\"exit_code\":1,\"checks\":[{\"id\":\"a\",\"title\":\"first\",\
             \"status\":\"ok\",\"found\":\"fine\",\"fix\":null,\"details\":{}},{\"id\":\"b\",\
             \"title\":\"second\",\"status\":\"warning\",\"found\":\"line one\\nline two\",\
             \"fix\":\"do this\",\"details\":{\"n\":3}}]}\n"
        );
    }
}
