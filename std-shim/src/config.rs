//! Process-wide settings: which manager to start and how to reach it, how to
//! name segments, how strictly to wait for the manager. Read from the
//! environment on first use, or set once with [`Config::install`] (PyTorch's
//! `libshm_init`).

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libshm_core::client::AckMode;
use libshm_core::handshake::ManagerHandle;
use libshm_core::name::NamePrefix;
use libshm_pipe::{ChildPipes, PipeTransport};
use libshm_unix::Launcher;

use crate::error::Error;
use crate::pool::{PoolSizes, PoolSizesError};
use crate::wire::TransportKind;

/// Path of the manager executable to start.
pub const ENV_MANAGER: &str = "LIBSHM_MANAGER";
/// `strict`, `pipelined` or `pipelined:<window>`.
pub const ENV_ACK: &str = "LIBSHM_ACK";
/// Prefix for generated segment names (default `/torch_`).
pub const ENV_PREFIX: &str = "LIBSHM_NAME_PREFIX";
/// `unix` (default) or `pipe`: how this process reaches the managers it starts.
pub const ENV_TRANSPORT: &str = "LIBSHM_TRANSPORT";

/// `on` (default) or `off`: whether pipelined clients hand frames to our
/// manager through a shared-memory journal instead of the socket.
pub const ENV_JOURNAL: &str = "LIBSHM_JOURNAL";

/// Segments to make ahead of time: `<size>[:<depth>],...` or `auto` (see
/// [`PoolSizes`]); unset, nothing is pooled.
pub const ENV_POOL: &str = "LIBSHM_POOL";

/// Our manager's file name, looked for next to the running executable and on `PATH`.
pub const MANAGER_BIN: &str = "shm-manager";

/// A private manager over pipes, just started.
pub(crate) struct PipeManager {
    pub(crate) handle: ManagerHandle,
    pub(crate) transport: PipeTransport,
    /// For killing it once given up on (see `Link`).
    pub(crate) pidfd: Option<OwnedFd>,
}

/// How this process uses managers.
///
/// A builder: each setter takes and returns the configuration, and the
/// getter for a setting is its setter's name with `get_` in front (as
/// `std::process::Command` names them).
#[derive(Clone, Debug)]
pub struct Config {
    manager_executable: Option<PathBuf>,
    manager_args: Vec<OsString>,
    ack_mode: AckMode,
    name_prefix: NamePrefix,
    reply_timeout: Option<Duration>,
    quiet_manager: bool,
    transport: TransportKind,
    journal: bool,
    pool: Option<PoolSizes>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            manager_executable: None,
            manager_args: Vec::new(),
            ack_mode: AckMode::default(),
            name_prefix: NamePrefix::torch(),
            reply_timeout: Some(Duration::from_secs(10)),
            quiet_manager: false,
            transport: TransportKind::Unix,
            journal: true,
            pool: None,
        }
    }
}

impl Config {
    /// Defaults overridden by `LIBSHM_MANAGER`, `LIBSHM_ACK`,
    /// `LIBSHM_NAME_PREFIX`, `LIBSHM_JOURNAL`, `LIBSHM_POOL` and
    /// `LIBSHM_TRANSPORT`.
    pub fn from_env() -> Result<Self, Error> {
        let mut config = Self::default();
        if let Some(path) = std::env::var_os(ENV_MANAGER).filter(|p| !p.is_empty()) {
            config.manager_executable = Some(path.into());
        }
        if let Some(mode) = env_str(ENV_ACK)? {
            config.ack_mode = parse_ack_mode(&mode).ok_or_else(|| Error::Env {
                var: ENV_ACK,
                why: format!("{mode:?} is not strict, pipelined or pipelined:<window>"),
            })?;
        }
        if let Some(prefix) = env_str(ENV_PREFIX)? {
            config.name_prefix = NamePrefix::new(prefix.as_bytes()).map_err(|err| Error::Env {
                var: ENV_PREFIX,
                why: err.to_string(),
            })?;
        }
        if let Some(journal) = env_str(ENV_JOURNAL)? {
            config.journal = match journal.as_str() {
                "on" | "1" | "true" => true,
                "off" | "0" | "false" => false,
                other => {
                    return Err(Error::Env {
                        var: ENV_JOURNAL,
                        why: format!("{other:?} is not on or off"),
                    });
                }
            };
        }
        if let Some(pool) = env_str(ENV_POOL)? {
            config.pool = Some(pool.parse().map_err(|err: PoolSizesError| Error::Env {
                var: ENV_POOL,
                why: err.to_string(),
            })?);
        }
        if let Some(kind) = env_str(ENV_TRANSPORT)? {
            config.transport = TransportKind::parse(&kind).ok_or_else(|| Error::Env {
                var: ENV_TRANSPORT,
                why: format!("{kind:?} is not unix or pipe"),
            })?;
        }
        Ok(config)
    }

    /// Keeps segments of these sizes made ahead of time, on the managers
    /// this configuration starts (see [`PoolSizes`]); `None` pools nothing.
    pub fn pool(mut self, sizes: Option<PoolSizes>) -> Self {
        self.pool = sizes;
        self
    }

    /// See [`Config::pool`].
    pub fn get_pool(&self) -> Option<&PoolSizes> {
        self.pool.as_ref()
    }

    /// The manager executable to start (PyTorch's `torch_shm_manager` works too).
    pub fn manager_executable(mut self, path: impl Into<PathBuf>) -> Self {
        self.manager_executable = Some(path.into());
        self
    }

    /// Arguments for the manager (ours only; PyTorch's ignores them). A
    /// `--name-prefix` here replaces the one the launchers pass by default.
    pub fn manager_args(mut self, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        self.manager_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Strict (wait for `OK` each time) or pipelined registration.
    pub fn ack_mode(mut self, mode: AckMode) -> Self {
        self.ack_mode = mode;
        self
    }

    /// Prefix for generated names.
    pub fn name_prefix(mut self, prefix: NamePrefix) -> Self {
        self.name_prefix = prefix;
        self
    }

    /// How long to wait for a manager's reply before calling it dead.
    pub fn reply_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.reply_timeout = timeout;
        self
    }

    /// Whether pipelined clients offer our manager a registration journal
    /// (frames through shared memory: no system call per registration).
    /// PyTorch's manager declines the offer, so it is harmless there.
    pub fn journal(mut self, enabled: bool) -> Self {
        self.journal = enabled;
        self
    }

    /// Silence started managers' stderr.
    pub fn quiet_manager(mut self, quiet: bool) -> Self {
        self.quiet_manager = quiet;
        self
    }

    /// How managers started with this configuration are reached: a Unix
    /// socket (the default, PyTorch's) or a private pair of pipes.
    pub fn transport(mut self, kind: TransportKind) -> Self {
        self.transport = kind;
        self
    }

    /// Makes this the process-wide configuration for managers started and
    /// segments named from now on.
    pub fn install(self) {
        crate::registry::install(self);
    }

    /// What [`Config::ack_mode`] set.
    pub fn get_ack_mode(&self) -> AckMode {
        self.ack_mode
    }

    /// What [`Config::name_prefix`] set.
    pub fn get_name_prefix(&self) -> &NamePrefix {
        &self.name_prefix
    }

    /// What [`Config::reply_timeout`] set.
    pub fn get_reply_timeout(&self) -> Option<Duration> {
        self.reply_timeout
    }

    /// What [`Config::journal`] set.
    pub fn get_journal(&self) -> bool {
        self.journal
    }

    /// What [`Config::transport`] set.
    pub fn get_transport(&self) -> TransportKind {
        self.transport
    }

    /// The launcher for this configuration's manager over a Unix socket.
    /// The manager is told this configuration's name prefix, the only names
    /// it will accept.
    pub fn launcher(&self) -> Result<Launcher, Error> {
        Ok(Launcher::new(self.executable()?)
            .args(self.all_manager_args())
            .quiet(self.quiet_manager))
    }

    /// Starts a private manager over pipes: this configuration's launcher,
    /// with the pipes added to its command. Its transport waits for replies
    /// as long as [`Config::reply_timeout`] says.
    pub(crate) fn launch_over_pipes(&self) -> Result<PipeManager, Error> {
        let pipes = ChildPipes::new(self.reply_timeout).map_err(Error::Pipes)?;
        let launcher = self.launcher()?;
        let launched = crate::fork_gate::exec_at_once(|| {
            launcher.launch_with(|command| pipes.prepare(command), ChildPipes::accepts)
        })?;
        tracing::debug!(handle = %launched.handle, pid = launched.pid, "started pipe manager");
        Ok(PipeManager {
            handle: launched.handle,
            transport: pipes.into_transport(),
            pidfd: launched.pidfd,
        })
    }

    /// `--name-prefix <prefix>` (unless [`Config::manager_args`] names one),
    /// then [`Config::manager_args`]. PyTorch's manager ignores its
    /// arguments, as it does the `--adopt` a reviving client passes, so the
    /// same launch works for both.
    fn all_manager_args(&self) -> Vec<OsString> {
        let named = self.manager_args.iter().any(|arg| {
            let arg = arg.as_encoded_bytes();
            arg == b"--name-prefix" || arg.starts_with(b"--name-prefix=")
        });
        let prefix = [
            OsString::from("--name-prefix"),
            self.name_prefix.as_str().into(),
        ];
        let prefix = if named { &[][..] } else { &prefix[..] };
        prefix.iter().chain(&self.manager_args).cloned().collect()
    }

    fn executable(&self) -> Result<PathBuf, Error> {
        match &self.manager_executable {
            Some(path) => Ok(path.clone()),
            None => find_manager().ok_or(Error::NoManagerExecutable),
        }
    }
}

fn env_str(var: &'static str) -> Result<Option<String>, Error> {
    match std::env::var(var) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::Env {
            var,
            why: "not valid UTF-8".into(),
        }),
    }
}

/// Parses `strict`, `pipelined` or `pipelined:<window>`.
pub(crate) fn parse_ack_mode(text: &str) -> Option<AckMode> {
    match text.split_once(':') {
        None if text == "strict" => Some(AckMode::Strict),
        None if text == "pipelined" => Some(AckMode::default()),
        Some(("pipelined", window)) => {
            let max_in_flight = window.parse().ok().filter(|&w: &u16| w > 0)?;
            Some(AckMode::Pipelined { max_in_flight })
        }
        _ => None,
    }
}

/// `shm-manager` next to the running executable (or one directory up, where
/// cargo puts binaries relative to test executables), else on `PATH`.
fn find_manager() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let beside = exe
        .parent()
        .into_iter()
        .chain(exe.parent().and_then(Path::parent));
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    beside
        .map(Path::to_path_buf)
        .chain(on_path)
        .map(|dir| dir.join(MANAGER_BIN))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managers_are_told_the_name_prefix_unless_told_another() {
        let prefix = NamePrefix::new(b"/mine_").unwrap();
        let config = Config::default().name_prefix(prefix);
        assert_eq!(config.all_manager_args(), ["--name-prefix", "/mine_"]);
        let config = config.manager_args(["-v"]);
        assert_eq!(config.all_manager_args(), ["--name-prefix", "/mine_", "-v"]);
        let config = config.manager_args(["--name-prefix", "/"]);
        assert_eq!(config.all_manager_args(), ["--name-prefix", "/"]);
        let config = config.manager_args(["--name-prefix=/x_"]);
        assert_eq!(config.all_manager_args(), ["--name-prefix=/x_"]);
    }

    #[test]
    fn ack_modes_parse() {
        assert_eq!(parse_ack_mode("strict"), Some(AckMode::Strict));
        assert_eq!(parse_ack_mode("pipelined"), Some(AckMode::default()));
        assert_eq!(
            parse_ack_mode("pipelined:8"),
            Some(AckMode::Pipelined { max_in_flight: 8 })
        );
        assert_eq!(parse_ack_mode("pipelined:0"), None);
        assert_eq!(parse_ack_mode("lazy"), None);
    }
}
