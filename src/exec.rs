//! The child's environment, and replacing this process with the command (`execve`).

use crate::error::Error;
use crate::load::Variable;
use nix::errno::Errno;
use secrecy::{ExposeSecret, SecretString};
use std::convert::Infallible;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use zeroize::Zeroizing;

/// Used when PATH is not set, like the default of most shells.
const DEFAULT_SEARCH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment handed to `execve`: `NAME=VALUE\0` entries whose buffers are zeroed
/// when dropped, which happens only if the exec fails.
pub struct ChildEnvironment {
    entries: Vec<Zeroizing<Vec<u8>>>,
}

impl ChildEnvironment {
    /// Starts from the environment qlarius-env was given and sets each `(name, value)`.
    /// A variable of the same name is replaced in place, or kept when `overwrite` is
    /// false. Returns the environment and the names it replaced or kept.
    ///
    /// Values were checked for NUL bytes when they were loaded; one found here is an
    /// internal error, never a truncated value.
    pub fn build(
        inherited: &[(OsString, OsString)],
        loaded: &[(&str, &SecretString)],
        overwrite: bool,
    ) -> Result<(ChildEnvironment, Vec<String>), Error> {
        let mut entries: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(inherited.len() + loaded.len());
        let mut names: Vec<&[u8]> = Vec::with_capacity(inherited.len());
        for (name, value) in inherited {
            if name.as_bytes().contains(&0) || value.as_bytes().contains(&0) {
                continue;
            }
            entries.push(entry(name.as_bytes(), value.as_bytes()));
            names.push(name.as_bytes());
        }

        let mut replaced = Vec::new();
        for (name, value) in loaded {
            let value = value.expose_secret().as_bytes();
            if value.contains(&0) {
                return Err(Error::Internal(format!("value for {name} contains a NUL byte")));
            }
            let new_entry = entry(name.as_bytes(), value);
            match names.iter().position(|n| *n == name.as_bytes()) {
                Some(index) => {
                    if overwrite {
                        entries[index] = new_entry;
                    }
                    replaced.push(name.to_string());
                }
                None => entries.push(new_entry),
            }
        }
        Ok((ChildEnvironment { entries }, replaced))
    }

    /// Returns each entry as a `(name, value)` pair, split at the first `=`, for APIs that
    /// take the environment as pairs (`std::process::Command`).
    pub fn pairs(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.entries.iter().map(|entry| {
            let entry = &entry[..entry.len() - 1];
            let split = entry.iter().position(|b| *b == b'=').unwrap_or(entry.len());
            let value = entry.get(split + 1..).unwrap_or_default();
            (OsStr::from_bytes(&entry[..split]), OsStr::from_bytes(value))
        })
    }

    fn as_c_strings(&self) -> Vec<&CStr> {
        self.entries
            .iter()
            .map(|e| CStr::from_bytes_with_nul(e).expect("entries end with their only NUL"))
            .collect()
    }
}

/// Builds the command's environment from the loaded variables, and logs which variables
/// already set in the environment were replaced, or kept with `--no-overwrite`.
pub fn environment_for(
    inherited: &[(OsString, OsString)],
    variables: &[Variable],
    overwrite: bool,
) -> Result<ChildEnvironment, Error> {
    let pairs: Vec<(&str, &SecretString)> = variables
        .iter()
        .map(|v| (v.name.as_str(), &v.value))
        .collect();
    let (environment, existing) = ChildEnvironment::build(inherited, &pairs, overwrite)?;
    if existing.is_empty() {
        return Ok(environment);
    }
    if overwrite {
        tracing::warn!(
            "replacing {} already set in the environment with the Parameter Store value",
            existing.join(", ")
        );
    } else {
        tracing::info!(
            "keeping {} already set in the environment (--no-overwrite)",
            existing.join(", ")
        );
    }
    Ok(environment)
}

/// Returns the command line for the log, with any loaded value that was also passed as
/// an argument replaced.
pub fn loggable_command(command: &[OsString], variables: &[Variable]) -> Vec<String> {
    command
        .iter()
        .map(|arg| crate::error::redact(&arg.to_string_lossy(), variables.iter().map(|v| &v.value)))
        .collect()
}

fn entry(name: &[u8], value: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut buffer = Zeroizing::new(Vec::with_capacity(name.len() + value.len() + 2));
    buffer.extend_from_slice(name);
    buffer.push(b'=');
    buffer.extend_from_slice(value);
    buffer.push(0);
    buffer
}

/// Replaces this process with `command`, found on `search_path` as a shell would. Returns
/// only on failure: 127 when nothing was found, 126 when something was found but could
/// not be executed.
pub fn exec(command: &[OsString], environment: &ChildEnvironment, search_path: Option<&OsStr>) -> Error {
    let args = match c_arguments(command) {
        Ok(args) => args,
        Err(error) => return error,
    };
    let envp = environment.as_c_strings();
    match search(command, search_path, |path| Err::<Infallible, _>(try_exec(path, &args, &envp))) {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

/// Converts the command and its arguments for `execve`; an argument with a NUL byte is a
/// usage error.
pub fn c_arguments(command: &[OsString]) -> Result<Vec<CString>, Error> {
    command
        .iter()
        .map(|a| CString::new(a.clone().into_vec()))
        .collect::<Result<_, _>>()
        .map_err(|_| {
            let display = command[0].to_string_lossy();
            Error::Usage(format!("{display}: an argument contains a NUL byte"))
        })
}

/// Calls `attempt` with each file the command may be, in the order execvp tries them, until
/// one succeeds. A program name with a `/` is tried as it is; otherwise each directory of
/// `search_path` in turn. A missing file moves on; a file that cannot be executed is
/// remembered (126) but later directories are still tried. When every attempt fails, the
/// error is 127 if nothing was found and 126 if something was.
///
/// Shared by exec, where `attempt` replaces the process, and the supervisor, where it
/// spawns a child.
pub fn search<T>(
    command: &[OsString],
    search_path: Option<&OsStr>,
    mut attempt: impl FnMut(&CStr) -> Result<T, Errno>,
) -> Result<T, Error> {
    let program = &command[0];
    let display = program.to_string_lossy().into_owned();
    if program.is_empty() {
        return Err(Error::CommandNotFound { command: display });
    }
    if program.as_bytes().contains(&b'/') {
        let Ok(path) = CString::new(program.as_bytes()) else {
            return Err(Error::Usage(format!("{display}: an argument contains a NUL byte")));
        };
        return attempt(&path).map_err(|errno| exec_error(display, errno));
    }

    let search_path = search_path.unwrap_or(OsStr::new(DEFAULT_SEARCH_PATH));
    let mut denied = None;
    for directory in search_path.as_bytes().split(|b| *b == b':') {
        let directory: &[u8] = if directory.is_empty() { b"." } else { directory };
        let mut candidate = directory.to_vec();
        candidate.push(b'/');
        candidate.extend_from_slice(program.as_bytes());
        let Ok(candidate) = CString::new(candidate) else { continue };

        match attempt(&candidate) {
            Ok(found) => return Ok(found),
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::ENAMETOOLONG) => continue,
            Err(Errno::EACCES | Errno::EISDIR) => denied = Some(Errno::EACCES),
            Err(other) => return Err(exec_error(display, other)),
        }
    }
    match denied {
        Some(errno) => Err(exec_error(display, errno)),
        None => Err(Error::CommandNotFound { command: display }),
    }
}

/// Calls `execve`; for a file with no `#!` line and no binary format (`ENOEXEC`), runs it
/// with `/bin/sh` as execvp and shells do. Returns the error when exec fails.
fn try_exec(path: &CStr, args: &[CString], envp: &[&CStr]) -> Errno {
    let mut argv: Vec<&CStr> = Vec::with_capacity(args.len() + 1);
    argv.push(&args[0]);
    argv.extend(args[1..].iter().map(CString::as_c_str));

    let errno = match nix::unistd::execve(path, &argv, envp) {
        Err(errno) => errno,
    };
    if errno != Errno::ENOEXEC {
        return errno;
    }

    let mut shell_argv: Vec<&CStr> = vec![c"sh", path];
    shell_argv.extend(args[1..].iter().map(CString::as_c_str));
    match nix::unistd::execve(c"/bin/sh", &shell_argv, envp) {
        Err(_) => Errno::ENOEXEC,
    }
}

fn exec_error(command: String, errno: Errno) -> Error {
    match errno {
        Errno::ENOENT => Error::CommandNotFound { command },
        Errno::EACCES => Error::CannotExecute {
            command,
            cause: "permission denied".into(),
        },
        other => Error::CannotExecute {
            command,
            cause: other.desc().to_lowercase(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    fn entries(environment: &ChildEnvironment) -> Vec<String> {
        environment
            .as_c_strings()
            .iter()
            .map(|c| c.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn loaded_value_replaces_inherited_in_place() {
        let secret = SecretString::from("new");
        let (environment, replaced) = ChildEnvironment::build(
            &os(&[("A", "1"), ("CLOAK_KEY", "stale"), ("B", "2")]),
            &[("CLOAK_KEY", &secret)],
            true,
        )
        .unwrap();
        assert_eq!(entries(&environment), ["A=1", "CLOAK_KEY=new", "B=2"]);
        assert_eq!(replaced, ["CLOAK_KEY"]);
    }

    #[test]
    fn no_overwrite_keeps_inherited() {
        let secret = SecretString::from("new");
        let (environment, kept) = ChildEnvironment::build(
            &os(&[("CLOAK_KEY", "local"), ("B", "2")]),
            &[("CLOAK_KEY", &secret), ("NEW", &secret)],
            false,
        )
        .unwrap();
        assert_eq!(entries(&environment), ["CLOAK_KEY=local", "B=2", "NEW=new"]);
        assert_eq!(kept, ["CLOAK_KEY"]);
    }

    #[test]
    fn values_are_byte_exact() {
        let value = "  line1\nline2=\"q'\" $HOME é\t ";
        let secret = SecretString::from(value);
        let (environment, _) = ChildEnvironment::build(&[], &[("V", &secret)], true).unwrap();
        assert_eq!(entries(&environment), [format!("V={value}")]);
    }

    #[test]
    fn empty_value_is_kept() {
        let secret = SecretString::from("");
        let (environment, _) = ChildEnvironment::build(&[], &[("EMPTY", &secret)], true).unwrap();
        assert_eq!(entries(&environment), ["EMPTY="]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Every value without a NUL byte reaches the environment byte for byte.
            #[test]
            fn values_without_nul_are_exact(value in "[^\u{0}]{0,300}") {
                let secret = SecretString::from(value.clone());
                let (environment, _) = ChildEnvironment::build(&[], &[("V", &secret)], true).unwrap();
                let entries = environment.as_c_strings();
                prop_assert_eq!(entries.len(), 1);
                let expected = format!("V={value}");
                prop_assert_eq!(entries[0].to_bytes(), expected.as_bytes());
            }
        }
    }
}
