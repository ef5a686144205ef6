//! The supervising mode (`--init`, `--watch`): start the command as a child and stay its
//! parent, doing what a container init does.
//!
//! The steps follow tini and dumb-init: install the signal handlers, spawn the command,
//! then loop: forward each signal, reap every exited process, apply a change from
//! Parameter Store, and stop once the command is gone. qlarius-env then exits with the
//! command's status, or 128 + N when signal N killed it.

use crate::cli::{OnChange, SuperviseArgs};
use crate::config::Config;
use crate::error::Error;
use crate::exec::{self, ChildEnvironment};
use crate::hardening::CoreLimit;
use crate::load::{self, Variable};
use crate::watch::Watcher;
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, killpg, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::ffi::{CStr, OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// The supervisor's response to a signal it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the signal to the command, or to its process group.
    Forward,
    /// Send the signal to the command, then stop qlarius-env with SIGSTOP, as dumb-init
    /// does, so that a shell's job control finds the whole job stopped. SIGCONT, forwarded,
    /// resumes both.
    ForwardThenStop,
    /// Reap exited processes.
    Reap,
}

/// Every signal the supervisor handles. Any other signal keeps its default disposition;
/// as PID 1 the kernel does not deliver those at all.
pub const HANDLED: [Signal; 12] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGCHLD,
];

/// Returns the supervisor's action for `signal`: the forwarding table.
pub fn action(signal: Signal) -> Option<Action> {
    use Signal::*;
    match signal {
        SIGTERM | SIGINT | SIGHUP | SIGQUIT | SIGUSR1 | SIGUSR2 | SIGWINCH | SIGCONT => {
            Some(Action::Forward)
        }
        SIGTSTP | SIGTTIN | SIGTTOU => Some(Action::ForwardThenStop),
        SIGCHLD => Some(Action::Reap),
        _ => None,
    }
}

/// Tells whether a received signal must be sent on to the command. A terminal has
/// already sent its signals to every process of its foreground group, which includes the
/// command unless the command has a process group of its own.
fn needs_forwarding(received: Received, own_group: bool) -> bool {
    !received.from_terminal || own_group
}

/// Signals that, received while a restart is stopping the command, mean the operator wants
/// everything to stop: the command is not started again.
fn ends_supervision(signal: Signal) -> bool {
    matches!(signal, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT)
}

/// Returns the exit code that reports a child's end: its own code, or 128 + N for a
/// death by signal N, as shells do.
pub fn exit_code(status: WaitStatus) -> Option<u8> {
    match status {
        WaitStatus::Exited(_, code) => Some(code as u8),
        WaitStatus::Signaled(_, signal, _) => Some(128u8.wrapping_add(signal as u8)),
        _ => None,
    }
}

/// Loads the variables, starts the command and supervises it until it exits. Returns the
/// exit code for qlarius-env.
pub fn run(
    command: Vec<OsString>,
    options: SuperviseArgs,
    config: Config,
    inherited: Vec<(OsString, OsString)>,
    core_limit: CoreLimit,
) -> Result<u8, Error> {
    // Threads of the runtime (the blocking pool's, for DNS) block the handled signals
    // from their start, so the kernel delivers a signal sent to qlarius-env to the main
    // thread. Landing on another thread with the default disposition, it would end
    // qlarius-env without being forwarded.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(|| {
            let _ = handled_signals().thread_block();
        })
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))?;
    let search_path = inherited
        .iter()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.clone());
    let launcher = Launcher {
        command,
        inherited,
        search_path,
        process_group: options.process_group,
        core_limit: core_limit.saved(),
        overwrite: !config.no_overwrite,
    };
    exec::c_arguments(&launcher.command)?;

    // A local task set, because the watcher's load borrows non-Send state across awaits.
    let tasks = tokio::task::LocalSet::new();
    let result = tasks.block_on(&runtime, async {
        let (variables, watcher) = match options.watch {
            Some(interval) => {
                let (watcher, variables) = Watcher::start(config, interval).await?;
                (variables, Some(watcher))
            }
            None => (load::load_variables(&config).await?.variables, None),
        };
        // Blocked only now, so that during the load a signal acts as without --init, and
        // the SDK can still wait for a credential_process child through SIGCHLD.
        let signals = block_signals()?;
        if let Some(code) = stopped_before_start(&signals) {
            return Ok(code);
        }
        let mut supervisor = Supervisor::start(launcher, options, signals, variables)?;
        let changes = watcher.map(|watcher| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::task::spawn_local(watcher.run(sender));
            receiver
        });
        supervisor.run(changes).await
    });
    // A DNS lookup may still be running on a blocking thread; it must not delay the exit.
    runtime.shutdown_background();
    result
}

/// Everything needed to start the command again with a new set of variables.
struct Launcher {
    command: Vec<OsString>,
    inherited: Vec<(OsString, OsString)>,
    search_path: Option<OsString>,
    process_group: bool,
    core_limit: Option<(u64, u64)>,
    /// False with --no-overwrite: a variable already in the environment is kept.
    overwrite: bool,
}

impl Launcher {
    /// Starts the command with `variables` set, searching PATH as exec does. The child
    /// starts with an empty signal mask, set between fork and exec, and default
    /// dispositions: qlarius-env catches no signal and ignores only SIGPIPE, which Rust's
    /// standard library resets for the child.
    fn spawn(&self, variables: Vec<Variable>) -> Result<Pid, Error> {
        let environment = exec::environment_for(&self.inherited, &variables, self.overwrite)?;
        tracing::debug!(command = ?exec::loggable_command(&self.command, &variables), "starting");
        let child = exec::search(&self.command, self.search_path.as_deref(), |path| {
            self.spawn_file(path, &environment)
        })?;
        // NOTE: std::process::Command keeps its own copy of the environment, which is
        // freed without being zeroed; ChildEnvironment's buffers are zeroed here on drop.
        drop(environment);
        drop(variables);
        Ok(Pid::from_raw(child.id() as i32))
    }

    /// Spawns one candidate file; for a file with no `#!` line and no binary format, runs
    /// it with `/bin/sh` as exec does.
    fn spawn_file(&self, path: &CStr, environment: &ChildEnvironment) -> Result<std::process::Child, Errno> {
        let program = OsStr::from_bytes(path.to_bytes());
        let arguments = &self.command[1..];
        match self.command_for(program, &self.command[0], arguments, environment).spawn() {
            Ok(child) => Ok(child),
            Err(e) if e.raw_os_error() == Some(Errno::ENOEXEC as i32) => {
                let mut shell_arguments = vec![program.to_os_string()];
                shell_arguments.extend(arguments.iter().cloned());
                self.command_for(OsStr::new("/bin/sh"), OsStr::new("sh"), &shell_arguments, environment)
                    .spawn()
                    .map_err(|_| Errno::ENOEXEC)
            }
            Err(e) => Err(Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32))),
        }
    }

    fn command_for(
        &self,
        program: &OsStr,
        arg0: &OsStr,
        arguments: &[OsString],
        environment: &ChildEnvironment,
    ) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        command.arg0(arg0).args(arguments).env_clear().envs(environment.pairs());
        if self.process_group {
            command.process_group(0);
        }
        let core_limit = self.core_limit;
        let take_terminal = self.process_group && owns_terminal();
        // SAFETY: the closure runs between fork and exec. It calls only setrlimit,
        // sigprocmask, getpid and tcsetpgrp, which are async-signal-safe, and it allocates
        // nothing and takes no lock. The signals qlarius-env blocks stay blocked until the
        // last step, so none reaches the child before exec.
        unsafe {
            command.pre_exec(move || {
                if let Some((soft, hard)) = core_limit {
                    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, soft, hard);
                }
                if take_terminal {
                    hand_terminal_to_self();
                }
                sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
                Ok(())
            });
        }
        command
    }
}

/// Tells whether standard input is a terminal whose foreground process group is
/// qlarius-env's, so that a child in a new process group must be given the terminal.
fn owns_terminal() -> bool {
    let stdin = std::io::stdin();
    nix::unistd::isatty(&stdin).unwrap_or(false)
        && nix::unistd::tcgetpgrp(&stdin).is_ok_and(|group| group == nix::unistd::getpgrp())
}

/// Makes the calling process's group the terminal's foreground group, as tini does for a
/// child in its own group. Called in the child before exec, where a background group
/// changing the foreground would get SIGTTOU unless it is blocked.
fn hand_terminal_to_self() {
    // SIGTTOU is already blocked (it is one of the handled signals) until the mask is
    // cleared just before exec.
    // SAFETY: descriptor 0 stays open for the duration of this call.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let _ = nix::unistd::tcsetpgrp(stdin, nix::unistd::getpid());
}

/// The running supervisor: the command's process and how to reach it.
struct Supervisor {
    launcher: Launcher,
    options: SuperviseArgs,
    child: Pid,
    signals: Signals,
}

impl Supervisor {
    /// Spawns the command. The handled signals were blocked before, so none sent to
    /// qlarius-env once the command exists is lost.
    fn start(
        launcher: Launcher,
        options: SuperviseArgs,
        signals: SignalFd,
        variables: Vec<Variable>,
    ) -> Result<Supervisor, Error> {
        let signals = Signals::new(signals)?;
        if let Err(errno) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::debug!("prctl(PR_SET_CHILD_SUBREAPER) failed: {errno}; orphans go to PID 1");
        }
        let child = launcher.spawn(variables)?;
        Ok(Supervisor {
            launcher,
            options,
            child,
            signals,
        })
    }

    /// Supervises the command until it exits; returns its exit code.
    async fn run(&mut self, mut changes: Option<mpsc::UnboundedReceiver<Vec<Variable>>>) -> Result<u8, Error> {
        loop {
            tokio::select! {
                received = self.signals.recv() => {
                    if let Some(code) = self.handle(received?) {
                        return Ok(self.finish(code));
                    }
                }
                Some(mut variables) = next_change(&mut changes) => {
                    while let Some(Ok(newer)) = changes.as_mut().map(|c| c.try_recv()) {
                        variables = newer;
                    }
                    match self.options.on_change {
                        OnChange::Signal(signal) => {
                            drop(variables);
                            tracing::info!("sending {} to the command", name(signal));
                            self.deliver(signal);
                        }
                        OnChange::Restart => {
                            if let Some(code) = self.restart(variables).await? {
                                return Ok(self.finish(code));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Acts on one signal; returns the exit code once the command has exited.
    fn handle(&mut self, received: Received) -> Option<u8> {
        let signal = received.signal;
        let forward = needs_forwarding(received, self.options.process_group);
        if !forward {
            tracing::debug!("{} came from the terminal, which sent it to the command too", name(signal));
        }
        match action(signal) {
            Some(Action::Reap) => reap(self.child).and_then(exit_code),
            Some(Action::Forward) => {
                if forward {
                    self.deliver(signal);
                }
                None
            }
            Some(Action::ForwardThenStop) => {
                if forward {
                    self.deliver(signal);
                }
                // As PID 1 this does nothing: the kernel ignores SIGSTOP sent to a
                // namespace's init from inside.
                let _ = nix::sys::signal::raise(Signal::SIGSTOP);
                None
            }
            None => None,
        }
    }

    /// Sends `signal` to the command, or to its process group. A command that has already
    /// exited is not an error, and nothing is printed for it.
    fn deliver(&self, signal: Signal) {
        let result = if self.options.process_group {
            killpg(self.child, signal)
        } else {
            kill(self.child, signal)
        };
        match result {
            Ok(()) => tracing::debug!("forwarded {} to {}", name(signal), self.child),
            Err(Errno::ESRCH) => tracing::debug!("{} not forwarded: the command has exited", name(signal)),
            Err(errno) => tracing::warn!("cannot send {} to the command: {errno}", name(signal)),
        }
    }

    /// Stops the command and starts it again with `variables`. Returns an exit code when
    /// qlarius-env must exit instead: the command had already exited, or the operator
    /// asked to stop during the restart.
    async fn restart(&mut self, variables: Vec<Variable>) -> Result<Option<u8>, Error> {
        // A command that has exited by itself is not restarted: its status is the exit code.
        if let Some(code) = reap(self.child).and_then(exit_code) {
            return Ok(Some(code));
        }

        let stop_signal = self.options.stop_signal;
        let timeout = self.options.stop_timeout;
        tracing::info!("restarting the command with the new values: sending {}", name(stop_signal));
        self.deliver(stop_signal);

        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut killed = false;
        let mut stop_requested = false;
        let status = loop {
            tokio::select! {
                received = self.signals.recv() => {
                    let received = received?;
                    if ends_supervision(received.signal) {
                        stop_requested = true;
                    }
                    if let Some(code) = self.handle(received) {
                        break code;
                    }
                }
                () = &mut deadline, if !killed => {
                    tracing::warn!(
                        "the command did not exit within {} of {}; sending KILL",
                        humantime::format_duration(timeout),
                        name(stop_signal)
                    );
                    killed = true;
                    self.deliver(Signal::SIGKILL);
                }
            }
        };

        if stop_requested {
            tracing::info!("not restarting the command: asked to stop while it was stopping");
            return Ok(Some(status));
        }
        tracing::info!("the command exited with status {status}; starting it again");
        self.child = self.launcher.spawn(variables)?;
        Ok(None)
    }

    /// Cleans up after the command has exited and returns `code`. In process-group mode,
    /// whatever is left of the group gets TERM, as dumb-init does.
    fn finish(&self, code: u8) -> u8 {
        if self.options.process_group {
            match killpg(self.child, Signal::SIGTERM) {
                Ok(()) => tracing::debug!("sent TERM to the rest of the command's process group"),
                Err(errno) => tracing::debug!("the command's process group is empty: {errno}"),
            }
        }
        reap(self.child);
        code
    }
}

async fn next_change(changes: &mut Option<mpsc::UnboundedReceiver<Vec<Variable>>>) -> Option<Vec<Variable>> {
    match changes {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Blocks every handled signal in the calling thread and returns a signalfd that reports
/// them. A blocked signal stays pending until read, and unlike a signal with the default
/// disposition, the kernel delivers it to PID 1. Repeats of one signal that arrive before
/// it is read count once, as the kernel counts them.
fn block_signals() -> Result<SignalFd, Error> {
    let mask = handled_signals();
    mask.thread_block()
        .map_err(|errno| Error::Internal(format!("cannot block signals: {errno}")))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|errno| Error::Internal(format!("cannot create a signalfd: {errno}")))
}

fn handled_signals() -> SigSet {
    let mut mask = SigSet::empty();
    for signal in HANDLED {
        mask.add(signal);
    }
    mask
}

/// One signal as read from the signalfd.
#[derive(Clone, Copy, Debug)]
struct Received {
    signal: Signal,
    /// True when a terminal sent it (`SI_KERNEL`): Ctrl-C, Ctrl-\, Ctrl-Z, a resize, or a
    /// background read or write. The terminal sends those to a whole process group, so a
    /// command in qlarius-env's own group has received it already.
    from_terminal: bool,
}

/// The blocked signals, read asynchronously from their signalfd.
struct Signals {
    fd: AsyncFd<SignalFd>,
}

impl Signals {
    fn new(fd: SignalFd) -> Result<Signals, Error> {
        // SAFETY: the SignalFd owns its descriptor, which stays open and unchanged until the
        // AsyncFd that owns the SignalFd is dropped.
        let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
        registered
            .map(|fd| Signals { fd })
            .map_err(|e| Error::Internal(format!("cannot watch the signalfd: {e}")))
    }

    async fn recv(&mut self) -> Result<Received, Error> {
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(|e| Error::Internal(format!("cannot read signals: {e}")))?;
            match guard.get_inner().read_signal() {
                Ok(Some(info)) => {
                    let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else { continue };
                    let from_terminal = info.ssi_code == SI_KERNEL && TERMINAL_SIGNALS.contains(&signal);
                    return Ok(Received { signal, from_terminal });
                }
                Ok(None) => guard.clear_ready(),
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(Error::Internal(format!("cannot read signals: {errno}"))),
            }
        }
    }
}

/// Reads the signals that arrived between blocking and spawning. Returns 128 + N when
/// one of them requests a stop (TERM, INT, QUIT or HUP, whose default action would have
/// ended qlarius-env), so that the command is never started. Others had no command to
/// go to and are dropped.
fn stopped_before_start(signals: &SignalFd) -> Option<u8> {
    while let Ok(Some(info)) = signals.read_signal() {
        let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else { continue };
        if ends_supervision(signal) || signal == Signal::SIGHUP {
            tracing::info!("received {} before the command started; not starting it", name(signal));
            return Some(128u8.wrapping_add(signal as u8));
        }
        tracing::debug!("dropping {}, which arrived before the command started", name(signal));
    }
    None
}

/// `si_code` of a signal the kernel generated, as a terminal's are (`SI_KERNEL` in
/// linux/include/uapi/asm-generic/siginfo.h).
const SI_KERNEL: i32 = 0x80;

/// Signals a terminal sends to its whole foreground (or offending background) process
/// group. SIGHUP is not among them: on a hangup the kernel may send it to the session
/// leader alone, so it is always forwarded.
const TERMINAL_SIGNALS: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTSTP,
    Signal::SIGWINCH,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// Reaps every exited child; one SIGCHLD can stand for many. Returns the status of
/// `main` if it was among them.
///
/// NOTE: this also reaps a process the AWS SDK starts after the command, so with --watch
/// a profile's `credential_process` cannot refresh credentials. Credentials from the
/// environment, SSO, web identity, containers and instance metadata start no process.
fn reap(main: Pid) -> Option<WaitStatus> {
    let mut main_status = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Ok(status) => {
                if status.pid() == Some(main) {
                    main_status = Some(status);
                } else {
                    tracing::debug!("reaped process {:?}: {status:?}", status.pid());
                }
            }
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                tracing::warn!("waitpid failed: {errno}");
                break;
            }
        }
    }
    main_status
}

/// Returns the signal's name without `SIG`, as operators write it.
fn name(signal: Signal) -> &'static str {
    let full = signal.as_str();
    full.strip_prefix("SIG").unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_table() {
        let forwarded = [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGWINCH,
            Signal::SIGCONT,
        ];
        for signal in forwarded {
            assert_eq!(action(signal), Some(Action::Forward), "{signal}");
        }
        for signal in [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU] {
            assert_eq!(action(signal), Some(Action::ForwardThenStop), "{signal}");
        }
        assert_eq!(action(Signal::SIGCHLD), Some(Action::Reap));
        for signal in [Signal::SIGURG, Signal::SIGPIPE, Signal::SIGALRM, Signal::SIGKILL] {
            assert_eq!(action(signal), None, "{signal}");
        }
    }

    #[test]
    fn every_handled_signal_has_an_action() {
        for signal in HANDLED {
            assert!(action(signal).is_some(), "{signal}");
        }
        let handled: Vec<Signal> = Signal::iterator().filter(|s| action(*s).is_some()).collect();
        assert_eq!(handled.len(), HANDLED.len());
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        let pid = Pid::from_raw(1);
        for code in [0, 1, 3, 255] {
            assert_eq!(exit_code(WaitStatus::Exited(pid, code)), Some(code as u8));
        }
        assert_eq!(exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)), Some(137));
        assert_eq!(exit_code(WaitStatus::Signaled(pid, Signal::SIGTERM, true)), Some(143));
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }

    #[test]
    fn terminal_signals_are_not_forwarded_twice() {
        let typed = Received {
            signal: Signal::SIGINT,
            from_terminal: true,
        };
        let sent = Received {
            signal: Signal::SIGINT,
            from_terminal: false,
        };
        assert!(!needs_forwarding(typed, false));
        assert!(needs_forwarding(typed, true));
        assert!(needs_forwarding(sent, false));
        assert!(needs_forwarding(sent, true));
    }

    #[test]
    fn signal_names_drop_prefix() {
        assert_eq!(name(Signal::SIGTERM), "TERM");
        assert_eq!(name(Signal::SIGWINCH), "WINCH");
    }

    #[test]
    fn stop_during_restart_only_for_terminating_signals() {
        assert!(ends_supervision(Signal::SIGTERM));
        assert!(ends_supervision(Signal::SIGINT));
        assert!(!ends_supervision(Signal::SIGHUP));
        assert!(!ends_supervision(Signal::SIGWINCH));
    }
}
