//! Keeps loaded values out of core dumps and away from debuggers while qlarius-env holds
//! them.
//!
//! `PR_SET_DUMPABLE` 0 stops core dumps and `ptrace` attach by other processes of the same
//! user, and hides `/proc/PID/environ` and `/proc/PID/mem` from them; the kernel resets it
//! on `execve`, so the command is unaffected. `RLIMIT_CORE` is set to 0 as a second guard
//! and restored just before `execve`, because resource limits survive exec.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The core-dump limit to put back before exec.
pub struct CoreLimit {
    saved: Option<(u64, u64)>,
}

/// Disables core dumps and marks the process not dumpable. Failures are logged and
/// ignored: they weaken a defence but do not expose anything by themselves.
pub fn protect_process() -> CoreLimit {
    if let Err(errno) = nix::sys::prctl::set_dumpable(false) {
        tracing::debug!("prctl(PR_SET_DUMPABLE, 0) failed: {errno}");
    }
    let saved = match getrlimit(Resource::RLIMIT_CORE) {
        Ok((soft, hard)) => match setrlimit(Resource::RLIMIT_CORE, 0, hard) {
            Ok(()) => Some((soft, hard)),
            Err(errno) => {
                tracing::debug!("setrlimit(RLIMIT_CORE, 0) failed: {errno}");
                None
            }
        },
        Err(errno) => {
            tracing::debug!("getrlimit(RLIMIT_CORE) failed: {errno}");
            None
        }
    };
    CoreLimit { saved }
}

impl CoreLimit {
    /// Returns the saved `(soft, hard)` limit, for a spawned child to restore between fork
    /// and exec, where it cannot log.
    pub fn saved(&self) -> Option<(u64, u64)> {
        self.saved
    }

    /// Restores the core-dump limit the command would have had without qlarius-env.
    pub fn restore(&self) {
        if let Some((soft, hard)) = self.saved {
            if let Err(errno) = setrlimit(Resource::RLIMIT_CORE, soft, hard) {
                tracing::debug!("restoring RLIMIT_CORE failed: {errno}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protect_then_restore_core_limit() {
        let before = getrlimit(Resource::RLIMIT_CORE).unwrap();
        let limit = protect_process();
        assert_eq!(getrlimit(Resource::RLIMIT_CORE).unwrap().0, 0);
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
        limit.restore();
        assert_eq!(getrlimit(Resource::RLIMIT_CORE).unwrap(), before);
        nix::sys::prctl::set_dumpable(true).unwrap();
    }
}
