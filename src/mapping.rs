//! Parameter names to environment variable names: conversion, validation and collisions.
//!
//! The rule: strip the path and the `/` after it, turn `/`, `-` and `.` into `_`, and
//! upper-case ASCII letters (unless case is preserved). The result must match
//! `^[A-Z_][A-Z0-9_]*$`, or `^[A-Za-z_][A-Za-z0-9_]*$` with case preserved. Anything else,
//! such as a leading digit, is an error naming the parameter, never a silent rename.

use crate::error::Error;
use std::collections::BTreeMap;

/// Converts `parameter`, found under `path`, into a variable name.
///
/// `path` is normalised: it starts with `/` and has no trailing `/` unless it is `/`.
pub fn variable_name(path: &str, parameter: &str, preserve_case: bool) -> Result<String, Error> {
    let relative = relative_name(path, parameter);
    let variable: String = relative
        .chars()
        .map(|c| match c {
            '/' | '-' | '.' => '_',
            c if preserve_case => c,
            c => c.to_ascii_uppercase(),
        })
        .collect();

    if is_valid_variable(&variable) {
        Ok(variable)
    } else {
        Err(Error::InvalidName {
            parameter: parameter.to_string(),
            variable,
        })
    }
}

/// Tells whether `parameter` lies below `path`, as every name GetParametersByPath returns
/// must. Under the root path every name does.
pub fn is_below(path: &str, parameter: &str) -> bool {
    if path == "/" {
        return true;
    }
    parameter
        .strip_prefix(path)
        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
}

/// Returns the part of `parameter` below `path`, or the whole name without its leading `/`
/// when it is not below `path`.
fn relative_name<'a>(path: &str, parameter: &'a str) -> &'a str {
    let prefix = path.trim_end_matches('/');
    parameter
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or_else(|| parameter.trim_start_matches('/'))
}

/// Checks a name against `^[A-Za-z_][A-Za-z0-9_]*$`; callers that upper-case have already
/// removed lower-case letters, so one check serves both modes.
pub fn is_valid_variable(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Variables that decide how programs are found, loaded and run. A parameter loaded by
/// path never sets one, so that `/app/path` or `/app/ld-preload` cannot take over the
/// command; an explicit `--map` still can.
const PROTECTED: [&str; 11] = [
    "PATH", "HOME", "SHELL", "USER", "LOGNAME", "PWD", "IFS", "ENV", "BASH_ENV", "CDPATH",
    "TMPDIR",
];
const PROTECTED_PREFIXES: [&str; 2] = ["LD_", "DYLD_"];

/// Tells whether a path parameter may not set `name`; compared without case, because
/// `--preserve-case` can produce `Path` or `ld_preload`.
pub fn is_protected(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    PROTECTED.contains(&upper.as_str()) || PROTECTED_PREFIXES.iter().any(|p| upper.starts_with(p))
}

/// Maps every parameter name under one path to its variable, in the order given.
///
/// Two parameters that map to the same variable are an error naming both, because SSM
/// names are case-sensitive and `a-b`, `a.b` and `a/b` are distinct parameters.
pub fn map_path<'a>(
    path: &str,
    parameters: impl IntoIterator<Item = &'a str>,
    preserve_case: bool,
) -> Result<Vec<(String, &'a str)>, Error> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    let mut mapped = Vec::new();
    for parameter in parameters {
        let variable = variable_name(path, parameter, preserve_case)?;
        if let Some(first) = seen.insert(variable.clone(), parameter) {
            let (first, second) = if first <= parameter {
                (first, parameter)
            } else {
                (parameter, first)
            };
            return Err(Error::Collision {
                first: first.to_string(),
                second: second.to_string(),
                variable,
            });
        }
        mapped.push((variable, parameter));
    }
    Ok(mapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(path: &str, parameter: &str) -> String {
        variable_name(path, parameter, false).unwrap()
    }

    #[test]
    fn qlarius_defaults_map_to_expected_variables() {
        assert_eq!(name("/qlarius", "/qlarius/twilio/account-sid"), "TWILIO_ACCOUNT_SID");
        assert_eq!(name("/qlarius", "/qlarius/twilio/auth-token"), "TWILIO_AUTH_TOKEN");
        assert_eq!(
            name("/qlarius", "/qlarius/twilio/verify-service-sid"),
            "TWILIO_VERIFY_SERVICE_SID"
        );
        assert_eq!(name("/qlarius", "/qlarius/cloak-key"), "CLOAK_KEY");
    }

    #[test]
    fn dots_and_dashes_become_underscores() {
        assert_eq!(name("/myapp", "/myapp/db.host"), "DB_HOST");
        assert_eq!(name("/myapp", "/myapp/a-b.c/d_e"), "A_B_C_D_E");
    }

    #[test]
    fn root_path_strips_leading_slash() {
        assert_eq!(name("/", "/qlarius/cloak-key"), "QLARIUS_CLOAK_KEY");
    }

    #[test]
    fn leading_digit_is_invalid() {
        let error = variable_name("/myapp", "/myapp/2fa/issuer", false).unwrap_err();
        assert_eq!(
            error.to_string(),
            "parameter /myapp/2fa/issuer maps to \"2FA_ISSUER\", which is not a valid variable name"
        );
    }

    #[test]
    fn preserve_case_keeps_letters() {
        assert_eq!(
            variable_name("/myapp", "/myapp/TF_VAR_instance_type", true).unwrap(),
            "TF_VAR_instance_type"
        );
        assert_eq!(
            variable_name("/myapp", "/myapp/TF_VAR_instance_type", false).unwrap(),
            "TF_VAR_INSTANCE_TYPE"
        );
    }

    #[test]
    fn valid_variable_pattern() {
        for good in ["A", "_", "A_1", "_9", "abc"] {
            assert!(is_valid_variable(good), "{good}");
        }
        for bad in ["", "1A", "A-B", "A.B", "A B", "É"] {
            assert!(!is_valid_variable(bad), "{bad}");
        }
    }

    #[test]
    fn collision_names_both_parameters() {
        let error = map_path("/myapp", ["/myapp/Api_Key", "/myapp/API_KEY"], false).unwrap_err();
        assert_eq!(
            error.to_string(),
            "parameters /myapp/API_KEY and /myapp/Api_Key both map to API_KEY"
        );
    }

    #[test]
    fn separators_collide() {
        let error = map_path("/p", ["/p/a-b", "/p/a/b"], false).unwrap_err();
        assert!(matches!(error, Error::Collision { .. }));
    }

    #[test]
    fn preserve_case_avoids_case_collision() {
        let mapped = map_path("/myapp", ["/myapp/Api_Key", "/myapp/API_KEY"], true).unwrap();
        assert_eq!(mapped.len(), 2);
    }

    #[test]
    fn mapping_is_deterministic() {
        let names = ["/p/x", "/p/y/z", "/p/w-1"];
        let first = map_path("/p", names, false).unwrap();
        let second = map_path("/p", names, false).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn below_path() {
        assert!(is_below("/u", "/u/a"));
        assert!(is_below("/u", "/u/a/b"));
        assert!(!is_below("/u", "/ux/a"));
        assert!(!is_below("/u", "/u"));
        assert!(!is_below("/u", "/u/"));
        assert!(is_below("/", "/anything"));
    }

    #[test]
    fn protected_names() {
        for name in ["PATH", "Path", "LD_PRELOAD", "ld_library_path", "DYLD_INSERT_LIBRARIES", "HOME"] {
            assert!(is_protected(name), "{name}");
        }
        for name in ["PATHS", "CLOAK_KEY", "OLD_PATH", "LDAP_URL"] {
            assert!(!is_protected(name), "{name}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any name Parameter Store accepts maps to a valid variable or to an
            /// InvalidName error, never a panic, and the same way every time.
            #[test]
            fn mapping_is_total_and_deterministic(
                path in "/[a-zA-Z0-9_.-]{1,12}(/[a-zA-Z0-9_.-]{1,12}){0,2}",
                rest in "[a-zA-Z0-9_.-]{1,16}(/[a-zA-Z0-9_.-]{1,16}){0,3}",
                preserve_case in any::<bool>(),
            ) {
                let parameter = format!("{path}/{rest}");
                let first = variable_name(&path, &parameter, preserve_case);
                let second = variable_name(&path, &parameter, preserve_case);
                match (&first, &second) {
                    (Ok(a), Ok(b)) => {
                        prop_assert_eq!(a, b);
                        prop_assert!(is_valid_variable(a));
                        if !preserve_case {
                            prop_assert!(!a.chars().any(|c| c.is_ascii_lowercase()));
                        }
                    }
                    (Err(Error::InvalidName { .. }), Err(Error::InvalidName { .. })) => {}
                    other => prop_assert!(false, "unexpected result {:?}", other),
                }
            }

            /// Arbitrary text, even outside Parameter Store's alphabet, never panics.
            #[test]
            fn mapping_never_panics(path in ".{0,20}", parameter in ".{0,40}") {
                let _ = variable_name(&path, &parameter, false);
                let _ = map_path(&path, [parameter.as_str()], true);
            }
        }
    }
}
