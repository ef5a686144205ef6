//! The human-readable form of the check report: one line per step, a status column
//! (ok, warn, FAIL, skip) and a closing line with the launch's result.

use super::{ParameterReport, Report};
use crate::error::sanitize;
use std::fmt::Write as _;

/// Renders the report for a terminal. Names from AWS pass through `sanitize`.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let line = |out: &mut String, status: &str, label: &str, text: &str| {
        let _ = writeln!(out, "{status:<7} {label:<13} {}", sanitize(text));
    };

    match &report.region {
        Some(region) => line(&mut out, "ok", "region", &format!("{} (from {})", region.name, region.source)),
        None => line(&mut out, "FAIL", "region", "not configured"),
    }
    if let Some(endpoint) = &report.endpoint {
        line(&mut out, "ok", "endpoint", endpoint);
    }
    match &report.credentials {
        Some(c) => {
            let mut text = format!("{}, access key {}", c.source, c.access_key_id);
            if let Some(profile) = &c.profile {
                let _ = write!(text, ", profile {profile}");
            }
            if let Some(expires) = &c.expires {
                let _ = write!(text, ", expires {expires}");
            } else if c.temporary {
                text.push_str(", temporary");
            }
            line(&mut out, "ok", "credentials", &text);
        }
        None if report.region.is_some() => line(&mut out, "FAIL", "credentials", "none found"),
        None => line(&mut out, "skip", "credentials", "needs a region"),
    }
    match (&report.identity, &report.identity_error) {
        (Some(identity), _) => line(
            &mut out,
            "ok",
            "identity",
            &format!("{} (account {})", identity.arn, identity.account),
        ),
        (None, Some(error)) => line(&mut out, "warn", "identity", error),
        (None, None) => line(&mut out, "skip", "identity", "needs credentials"),
    }

    if report.credentials.is_some() {
        render_parameters(&mut out, report);
    }

    if let Some(error) = &report.error {
        let _ = writeln!(out, "\nresult: a launch would fail with exit code {}: {}", report.exit_code, error.message);
        if let Some(hint) = &error.hint {
            let _ = writeln!(out, "hint: {hint}");
        }
    } else {
        let _ = writeln!(out, "\nresult: a launch would start the command");
    }
    out
}

fn render_parameters(out: &mut String, report: &Report) {
    let line = |out: &mut String, status: &str, label: &str, text: &str| {
        let _ = writeln!(out, "{status:<7} {label:<13} {}", sanitize(text));
    };
    for path in &report.paths {
        let rows: Vec<&ParameterReport> = report.parameters.iter().filter(|r| &r.path == path).collect();
        let _ = writeln!(out, "\n{} ({} parameter{})", sanitize(path), rows.len(), if rows.len() == 1 { "" } else { "s" });
        for row in rows {
            let status = if row.variable.is_none()
                || row.decrypted == Some(false)
                || report.collisions.iter().any(|c| c.parameters.contains(&row.name))
            {
                "FAIL"
            } else if !row.warnings.is_empty() {
                "warn"
            } else {
                "ok"
            };
            let mut details = vec![row.kind.clone().unwrap_or_else(|| "type unknown".into())];
            if let Some(key) = &row.key_id {
                details.push(format!("key {key}"));
            }
            if let Some(version) = row.version {
                details.push(format!("v{version}"));
            }
            if let Some(date) = &row.last_modified {
                details.push(format!("modified {date}"));
            }
            if let Some(length) = row.value_length {
                details.push(format!("{length} bytes"));
            }
            let variable = row.variable.as_deref().unwrap_or("(invalid name)");
            let _ = writeln!(
                out,
                "{status:<7} {} -> {variable}  [{}]",
                sanitize(&row.name),
                sanitize(&details.join(", "))
            );
            if let Some(later) = &row.replaced_by {
                let _ = writeln!(out, "{:<7}   replaced by {}", "", sanitize(later));
            }
            for warning in &row.warnings {
                let _ = writeln!(out, "{:<7}   warning: {}", "", sanitize(warning));
            }
        }
    }
    if let Some(error) = &report.metadata_error {
        let _ = writeln!(out, "warn    metadata: {}", sanitize(error));
    }
    out.push('\n');

    for collision in &report.collisions {
        line(
            out,
            "FAIL",
            "collision",
            &format!("{} all map to {}", collision.parameters.join(", "), collision.variable),
        );
    }
    for invalid in &report.invalid_names {
        line(
            out,
            "FAIL",
            "invalid name",
            &format!("{} maps to {:?}, not a valid variable name", invalid.parameter, invalid.variable),
        );
    }
    for required in &report.required {
        match (&required.parameter, &required.expected_parameter) {
            (Some(parameter), _) => line(out, "ok", "required", &format!("{} from {parameter}", required.variable)),
            (None, Some(expected)) => line(
                out,
                "FAIL",
                "required",
                &format!("{} missing (expected from {expected})", required.variable),
            ),
            (None, None) => line(out, "FAIL", "required", &format!("{} missing", required.variable)),
        }
    }
    let decryption_status = match report.decryption.status {
        "ok" | "not_needed" => "ok",
        "failed" => "FAIL",
        _ => "skip",
    };
    line(
        out,
        decryption_status,
        "decryption",
        report.decryption.detail.as_deref().unwrap_or(report.decryption.status),
    );
    if !report.parameters.is_empty() {
        if report.environment_overrides.is_empty() {
            line(out, "ok", "environment", "a launch would replace no variable already set here");
        } else {
            line(
                out,
                "warn",
                "environment",
                &format!("a launch would replace {}, already set here", report.environment_overrides.join(", ")),
            );
        }
    }
}
