//! `shm-manager`: a drop-in replacement for PyTorch's `torch_shm_manager`.
//!
//! Run with no arguments it does what the original does: `setsid`, create a
//! private `torch-shm-dir-XXXXXX` directory with `manager.sock`, print the
//! socket path and a newline on stdout (or `ERROR: <why>` and exit 1), answer
//! every registration with `OK`, and once no client has been connected for
//! 2 s unlink every name still registered, remove the socket and exit.
//!
//! A start-up failure is one `ERROR: <cause>; <fix>` line, which PyTorch shows
//! in the exception it raises. When `$TMPDIR` cannot hold the socket (its path
//! would overflow the 108-byte socket address, or the directory is missing or
//! read-only), the manager serves from `/tmp` (else `/dev/shm`) instead and
//! says so on stderr; PyTorch's own manager fails there.
//!
//! Unlike the original it never blocks on one client, reaps segments whose
//! holders died while others go on, refuses other users' connections, accepts
//! only names under its prefix (`$LIBSHM_NAME_PREFIX`, else `/torch_`), and
//! only opens or unlinks regular files its own user owns in `/dev/shm`, never
//! waiting on anything found there.
//!
//! With `--transport pipe` it is instead one process's private manager: it
//! creates no socket, reads frames from the pipe at the first of `--pipe-fds`
//! (default 3) and writes replies to the second (default 4), prints the
//! handle `pipe:<pid>`, and once its client's pipe reaches end of file it
//! unlinks every name still registered and exits. Its client is the process
//! `--client-pid` names (else its parent): what that process registered ends
//! with it, even while a child it forked keeps the pipes open.
//! `libshm_unix::Launcher` with `libshm_pipe::ChildPipes` starts it that way.

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use libshm::{ENV_PREFIX, ShmNamespace};
use libshm_core::manager::ManagerConfig;
use libshm_core::name::{NamePrefix, SegmentName};
use libshm_pipe::{ClientProcess, InheritError, ManagerEnds, REPLY_FD, REQUEST_FD};
use libshm_unix::{Adoption, BASE_MAX, CreateError, FALLBACK_BASES, Listener, RunDir};

use units::{parse_duration, parse_optional_duration};

#[path = "shared/logging.rs"]
mod logging;
#[allow(
    dead_code,
    reason = "shared with shmctl, which reads what this binary writes"
)]
#[path = "shared/manager_identity.rs"]
mod manager_identity;
#[allow(dead_code, reason = "shared with shmctl, which uses the rest")]
#[path = "shared/units.rs"]
mod units;

/// What `shmctl torch status` reads to recognise this binary without running
/// it. The section name is `manager_identity::SECTION` (an attribute cannot
/// name a constant); the tests that identify this binary fail if they differ.
#[used]
#[unsafe(link_section = ".libshm_manager")]
static IDENTITY: [u8; manager_identity::TEXT.len()] = manager_identity::text_bytes();

/// Environment variable for the log level when no flag is given (error, warn,
/// info, debug, trace). PyTorch starts the manager without arguments, so this
/// is how to get its logs there.
const ENV_LOG: &str = "SHM_MANAGER_LOG";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Shared-memory manager daemon, compatible with PyTorch's torch_shm_manager"
)]
struct Args {
    /// How clients reach this manager: `unix`, a socket any process of this
    /// user can connect to (what PyTorch starts); or `pipe`, one client over
    /// the pipes at --pipe-fds, for as long as that client lives.
    #[arg(long, value_enum, default_value_t = Transport::Unix)]
    transport: Transport,

    /// With --transport pipe: the descriptor to read requests from and the
    /// one to write replies to.
    #[arg(long, default_value_t = FdPair(REQUEST_FD, REPLY_FD), value_parser = parse_fd_pair)]
    pipe_fds: FdPair,

    /// With --transport pipe: the pid of the client, the process that starts
    /// this manager. The manager looks for its client before it prints its
    /// handshake, which the client waits for. If that process has already
    /// ended when the manager looks (it was stopped meanwhile), what the
    /// client registered ends at once. Without it the manager takes its
    /// parent at that moment for its client, which is init once the client
    /// has died.
    #[arg(long, value_name = "PID", value_parser = parse_pid)]
    client_pid: Option<rustix::process::Pid>,

    /// Exit after this long with no client connected (unix transport only).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    shutdown_timeout: Duration,

    /// Unlink a segment this long after its last holder died without
    /// releasing it; `off` keeps it until shutdown, as PyTorch does.
    #[arg(long, default_value = "2s", value_parser = optional_duration)]
    reap_grace: Switchable,

    /// Close a client that leaves half a frame unsent this long, or sends
    /// nothing this long after connecting; `off` never does.
    #[arg(long, default_value = "5s", value_parser = optional_duration)]
    frame_timeout: Switchable,

    /// With no client left, go on serving up to this long while a segment it
    /// knows is in transit (pickled into a queue, its refcount higher than
    /// its dead holders account for), so its receiver can still open it;
    /// `0` shuts down at once, as PyTorch's manager does.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    linger: Duration,

    /// Refuse (answer `NO` to) registrations of new names beyond this many.
    /// No journal is attached at the limit; a journal attached before may
    /// register up to twice it (a journaled registration cannot be refused:
    /// its segment may exist already), and past that its connection is closed.
    #[arg(long, default_value_t = 4_194_304)]
    max_names: usize,

    /// Accept only segment names starting with this prefix; a registration
    /// of any other name is answered `NO`. `/` accepts every name
    /// [default: $LIBSHM_NAME_PREFIX, else /torch_].
    #[arg(long)]
    name_prefix: Option<String>,

    /// Where to create the private socket directory, with no fallback
    /// [default: $TMPDIR or /tmp, falling back to /tmp, then /dev/shm].
    #[arg(long)]
    run_dir: Option<PathBuf>,

    /// Serve at the handle of a manager that died, taking over its private
    /// directory, so clients that knew that handle find a manager there again.
    /// If a live manager already serves it, print the handle and exit.
    #[arg(long, value_name = "HANDLE", conflicts_with = "run_dir")]
    adopt: Option<PathBuf>,

    /// With --adopt: the prefix of the names whose holders may have died while
    /// no manager was watching; leaked ones are reaped like orphans.
    #[arg(long, default_value = "/torch_", requires = "adopt")]
    sweep_prefix: String,

    /// Refuse more than this many simultaneous clients (unix transport only).
    #[arg(long, default_value_t = 65_536)]
    max_clients: usize,

    /// After a round that answered a client, poll up to this long without
    /// sleeping (yielding the CPU), so a client that waits for each reply
    /// (PyTorch's) is answered without waking the manager. The window adapts:
    /// it shrinks when frames do not come in time, and spinning rests while
    /// other tasks wait for a CPU (/proc/pressure/cpu; without it, never
    /// spins) or the cgroup's CPU quota runs out. `0` always sleeps.
    #[arg(long, default_value = "200us", value_parser = parse_duration)]
    spin: Duration,

    /// More logging on stderr: -v info, -vv debug, -vvv trace (default: warnings).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Log errors only.
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
}

fn main() -> ExitCode {
    // A reference the linker cannot drop, so the section survives
    // `--gc-sections` in every profile.
    std::hint::black_box(&IDENTITY);
    // Leave the launching process's session, so its terminal's signals do not
    // reach us. Fails harmlessly if we already lead a process group.
    let _ = rustix::process::setsid();
    let args = Args::parse();
    // Claim the pipes before anything else can open a file: were they
    // closed, a later open would land on their numbers.
    let ends = match args.transport {
        Transport::Pipe => {
            let FdPair(requests, replies) = args.pipe_fds;
            // SAFETY: nothing in this process has opened a file yet
            // (argument parsing does not), so nothing else owns these two
            // numbers; they are checked to be open before ownership is taken.
            Some(unsafe { ManagerEnds::inherited(requests, replies) })
        }
        Transport::Unix => None,
    };
    stderr_without_blocking();
    init_logging(&args);

    let config = match manager_config(&args) {
        Ok(config) => config,
        Err(err) => return fail(&err),
    };
    // Every look into /dev/shm goes through this one directory descriptor.
    let namespace = match ShmNamespace::for_current_user() {
        Ok(namespace) => namespace,
        Err(error) => return fail(&StartupError::Namespace { error }),
    };
    match ends {
        Some(ends) => serve_pipe(&args, ends, config, namespace),
        None => serve_unix(&args, config, namespace),
    }
}

fn serve_unix(args: &Args, config: ManagerConfig, mut namespace: ShmNamespace) -> ExitCode {
    raise_fd_limit();
    let dir = match &args.adopt {
        Some(handle) => match RunDir::adopt(handle) {
            Ok(Adoption::Adopted(dir)) => dir,
            Ok(Adoption::Served) => return point_at_live_manager(handle),
            Err(error) => {
                return fail(&StartupError::Adopt {
                    handle: handle.clone(),
                    error,
                });
            }
        },
        None => match run_dir(args) {
            Ok(dir) => dir,
            Err(err) => return fail(&err),
        },
    };
    let socket = dir.socket_path();
    let listener = match Listener::bind(dir) {
        Ok(listener) => listener,
        Err(error) => return fail(&StartupError::Bind { socket, error }),
    };
    if let Err(err) = handshake(&format!("{}\n", listener.handle())) {
        tracing::error!("could not print the handle: {err}");
        return ExitCode::FAILURE;
    }
    tracing::info!(handle = %listener.handle(), "serving");
    let recovery = match &args.adopt {
        Some(_) => match NamePrefix::new(args.sweep_prefix.as_bytes()) {
            Ok(prefix) => Some(leak_recovery(prefix)),
            Err(err) => {
                return fail(&StartupError::Option {
                    option: "--sweep-prefix",
                    why: err.to_string(),
                });
            }
        },
        None => None,
    };
    let tuning = libshm_unix::Tuning {
        spin: args.spin,
        recovery,
        mapped: Some(std::sync::Arc::new(|names: &[SegmentName]| {
            // Through `ShmError` for its message with every cause.
            libshm::inspect::mapped(names)
                .map_err(|err| libshm::ShmError::Scan(Box::new(err)).to_string())
        })),
    };
    let summary = libshm_unix::serve_tuned(listener, config, &mut namespace, tuning);
    tracing::debug!(?summary, "exiting");
    ExitCode::SUCCESS
}

/// A recovery whose sweep judges `/dev/shm` under `prefix` on its own
/// thread, through a namespace of its own.
fn leak_recovery(prefix: NamePrefix) -> libshm_unix::Recovery {
    let finder = std::sync::Mutex::new(None::<ShmNamespace>);
    let find = move || {
        let mut namespace = finder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if namespace.is_none() {
            *namespace = Some(ShmNamespace::for_current_user().map_err(|err| err.to_string())?);
        }
        let namespace = namespace.as_mut().expect("set above");
        namespace
            .find_leaked(&prefix)
            .map_err(|err| err.to_string())
    };
    libshm_unix::Recovery {
        prefix,
        find: std::sync::Arc::new(find),
    }
}

fn serve_pipe(
    args: &Args,
    ends: Result<ManagerEnds, InheritError>,
    config: ManagerConfig,
    mut namespace: ShmNamespace,
) -> ExitCode {
    let ends = match ends {
        Ok(ends) => ends,
        Err(error) => {
            return fail(&StartupError::PipeFds {
                fds: args.pipe_fds,
                error,
            });
        }
    };
    // Held before the handshake: the launcher goes on (and may die) only
    // once it has read it, so however long we are stopped after printing
    // it, we watch the process that launched us, not its pid's next owner
    // or, for want of `--client-pid`, our new parent.
    let client = args
        .client_pid
        .map_or(ClientProcess::Parent, ClientProcess::Launcher)
        .hold();
    let handle = libshm_pipe::pipe_handle(std::process::id());
    if let Err(err) = handshake(&format!("{handle}\n")) {
        tracing::error!("could not print the handle: {err}");
        return ExitCode::FAILURE;
    }
    tracing::info!(%handle, "serving one client over pipes");
    let summary = libshm_pipe::serve(ends, client, config, &mut namespace);
    tracing::debug!(?summary, "exiting");
    ExitCode::SUCCESS
}

/// How clients reach the manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    /// A Unix socket in a private directory (PyTorch's).
    Unix,
    /// A pair of pipes to one client.
    Pipe,
}

/// `<read>,<write>` descriptors.
#[derive(Clone, Copy, Debug)]
struct FdPair(RawFd, RawFd);

impl std::fmt::Display for FdPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.0, self.1)
    }
}

fn parse_fd_pair(text: &str) -> Result<FdPair, String> {
    let (read, write) = text
        .split_once(',')
        .ok_or_else(|| format!("{text:?} is not <read>,<write>"))?;
    let fd = |part: &str| {
        part.trim()
            .parse::<RawFd>()
            .ok()
            .filter(|&fd| fd >= 0)
            .ok_or_else(|| format!("{part:?} is not a file descriptor"))
    };
    Ok(FdPair(fd(read)?, fd(write)?))
}

fn parse_pid(text: &str) -> Result<rustix::process::Pid, String> {
    text.trim()
        .parse::<i32>()
        .ok()
        // Checked first: `Pid::from_raw` asserts a pid is not negative.
        .filter(|&pid| pid > 0)
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("{text:?} is not a process id"))
}

/// A duration that `off` disables (clap reads `Option` as "may be omitted").
#[derive(Clone, Copy, Debug)]
struct Switchable(Option<Duration>);

fn optional_duration(text: &str) -> Result<Switchable, String> {
    parse_optional_duration(text).map(Switchable)
}

/// The private directory under `--run-dir`, or under the temporary directory
/// PyTorch would use, falling back to a short one if that cannot hold it. An
/// explicit `--run-dir` is taken at its word: no fallback.
fn run_dir(args: &Args) -> Result<RunDir, StartupError> {
    if let Some(base) = &args.run_dir {
        return RunDir::create(base).map_err(|error| StartupError::RunDir {
            error,
            explicit: true,
        });
    }
    let (base, var) = RunDir::default_base_and_var();
    let placed = RunDir::create_or_fall_back(&base).map_err(|error| StartupError::RunDir {
        error,
        explicit: false,
    })?;
    if let Some(why) = &placed.instead_of {
        let fix = match why {
            CreateError::PathTooLong { .. } => {
                format!("a shorter directory (at most {BASE_MAX} bytes)")
            }
            CreateError::Os { .. } => "a directory you can write".to_owned(),
        };
        tracing::warn!(
            "{why}; serving from {} instead. Fix: set {} to {fix}",
            placed.dir.path().display(),
            var.unwrap_or("TMPDIR"),
        );
    }
    Ok(placed.dir)
}

/// Why the manager could not start. Printed as one `ERROR: <cause>; <fix>`
/// line on stdout, which PyTorch puts in the exception it raises, and on
/// stderr.
#[derive(Debug)]
enum StartupError {
    /// No directory for the socket.
    RunDir {
        error: CreateError,
        /// The base came from `--run-dir`, not the environment.
        explicit: bool,
    },
    /// `--adopt` could not take over the directory.
    Adopt { handle: PathBuf, error: io::Error },
    /// `--adopt` found the directory locked, but nobody answers there.
    Unanswered { handle: PathBuf },
    /// The socket could not be bound.
    Bind { socket: PathBuf, error: io::Error },
    /// A command-line value is unusable.
    Option { option: &'static str, why: String },
    /// `--transport pipe` without usable pipes.
    PipeFds { fds: FdPair, error: InheritError },
    /// `/dev/shm` cannot be opened.
    Namespace { error: libshm::ShmError },
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RunDir { error, explicit } => {
                let fix = match (error, explicit) {
                    (CreateError::PathTooLong { .. }, true) => {
                        format!("pass a --run-dir of at most {BASE_MAX} bytes")
                    }
                    (CreateError::Os { base, .. }, true) => format!(
                        "create {} or pass a --run-dir you can write",
                        base.display()
                    ),
                    (_, false) => format!(
                        "set TMPDIR to a directory you can write whose path is at most \
                         {BASE_MAX} bytes, such as /tmp ({} failed too)",
                        FALLBACK_BASES.join(" and ")
                    ),
                };
                write!(f, "{error}; {fix}")
            }
            Self::Adopt { handle, error } => {
                // RunDir::adopt's own refusals already name the handle.
                if error.kind() != io::ErrorKind::InvalidInput {
                    write!(f, "cannot adopt {}: ", handle.display())?;
                }
                write!(f, "{error}; start a new manager instead (without --adopt)")
            }
            Self::Unanswered { handle } => write!(
                f,
                "the manager at {} holds its directory but does not answer; if no manager \
                 process serves it, remove {} and start a new manager",
                handle.display(),
                handle.parent().unwrap_or(handle).display()
            ),
            Self::Bind { socket, error } => write!(
                f,
                "cannot bind the manager socket {}: {error}; set TMPDIR to a local \
                 directory that can hold Unix sockets (not a network or FUSE filesystem), \
                 such as /tmp",
                socket.display()
            ),
            Self::Option { option, why } => write!(
                f,
                "{option}: {why}; pass a prefix such as /torch_ (a slash, then visible \
                 ASCII without another slash)"
            ),
            Self::Namespace { error } => write!(
                f,
                "{error}; mount a tmpfs at /dev/shm (POSIX shared memory lives there), \
                 e.g. `mount -t tmpfs -o mode=1777 tmpfs /dev/shm`"
            ),
            Self::PipeFds { fds, error } => write!(
                f,
                "--pipe-fds {fds}: {error}; start a pipe manager through \
                 libshm_pipe::ChildPipes, which hands it its pipes as descriptors 3 and 4, \
                 or name the open descriptors with --pipe-fds"
            ),
        }
    }
}

/// Another manager adopted `handle` first (or it never died): wait until it
/// accepts connections, then hand the client that handle.
fn point_at_live_manager(handle: &std::path::Path) -> ExitCode {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::os::unix::net::UnixStream::connect(handle).is_err() {
        if std::time::Instant::now() >= deadline {
            return fail(&StartupError::Unanswered {
                handle: handle.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match handshake(&format!("{}\n", handle.display())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn manager_config(args: &Args) -> Result<ManagerConfig, StartupError> {
    Ok(ManagerConfig {
        shutdown_after: args.shutdown_timeout,
        reap_grace: args.reap_grace.0,
        frame_timeout: args.frame_timeout.0,
        silence_timeout: args.frame_timeout.0,
        linger: args.linger,
        max_names: args.max_names,
        name_prefix: Some(name_prefix(args)?),
        // Started as PyTorch starts it, it serves PyTorch's names whatever
        // the environment says besides.
        also_prefix: args.name_prefix.is_none().then(NamePrefix::torch),
        owner_uid: Some(rustix::process::geteuid().as_raw()),
        max_connections: args.max_clients,
        ..ManagerConfig::default()
    })
}

/// The names this manager accepts: `--name-prefix`, else `$LIBSHM_NAME_PREFIX`
/// (what a client of the same environment names its segments with) and
/// PyTorch's `/torch_`, else `/torch_` alone. Started as PyTorch starts it,
/// with no arguments, it thus never takes on another program's objects
/// (`/sem.*`, say), which it would unlink once their registering client is
/// gone, and always serves PyTorch.
fn name_prefix(args: &Args) -> Result<NamePrefix, StartupError> {
    let (text, source) = match &args.name_prefix {
        Some(text) => (text.clone(), "--name-prefix"),
        None => match std::env::var(ENV_PREFIX) {
            Ok(text) if !text.is_empty() => (text, ENV_PREFIX),
            Ok(_) | Err(std::env::VarError::NotPresent) => return Ok(NamePrefix::torch()),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(StartupError::Option {
                    option: ENV_PREFIX,
                    why: "not valid UTF-8".to_owned(),
                });
            }
        },
    };
    NamePrefix::new(text.as_bytes()).map_err(|err| StartupError::Option {
        option: source,
        why: format!("{text:?}: {err}"),
    })
}

/// Makes our stderr a description of its own that never blocks: PyTorch
/// passes its stderr to the manager, and a pipe nobody drains must cost log
/// lines, never the manager's answers. Only pipes, sockets and terminals are
/// reopened (a file's offset would be lost); where reopening fails, stderr
/// stays as it was.
fn stderr_without_blocking() {
    use rustix::fs::{FileType, Mode, OFlags};
    let Ok(stat) = rustix::fs::fstat(rustix::stdio::stderr()) else {
        return;
    };
    let kind = FileType::from_raw_mode(stat.st_mode);
    if !matches!(kind, FileType::Fifo | FileType::CharacterDevice) {
        return;
    }
    let reopened = rustix::fs::open(
        "/proc/self/fd/2",
        OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    );
    if let Ok(fd) = reopened {
        let _ = rustix::stdio::dup2_stderr(&fd);
    }
}

/// Prints the handshake line, then points stdout at /dev/null so whoever
/// reads our output sees end of file and nothing we do later can SIGPIPE.
fn handshake(line: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes())?;
    stdout.flush()?;
    let null = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::stdio::dup2_stdout(&null)?;
    Ok(())
}

fn fail(err: &StartupError) -> ExitCode {
    tracing::error!("{err}");
    // One line: PyTorch reads up to the first newline.
    let line = err.to_string().replace('\n', " ");
    let _ = handshake(&format!("ERROR: {line}\n"));
    ExitCode::FAILURE
}

fn init_logging(args: &Args) {
    use tracing::Level;
    let from_env = std::env::var(ENV_LOG)
        .ok()
        .and_then(|level| level.parse::<Level>().ok());
    let level = match (args.quiet, args.verbose) {
        (true, _) => Level::ERROR,
        (false, 0) => from_env.unwrap_or(Level::WARN),
        (false, 1) => Level::INFO,
        (false, 2) => Level::DEBUG,
        (false, _) => Level::TRACE,
    };
    logging::to_stderr(level);
}

/// Lifts the soft descriptor limit to the hard one: each client costs one.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!("could not raise the descriptor limit: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_pid_is_a_positive_number_and_anything_else_an_error_not_a_panic() {
        assert_eq!(
            parse_pid("42").map(|pid| pid.as_raw_nonzero().get()),
            Ok(42)
        );
        for text in ["0", "-5", "abc", "", "4294967296"] {
            assert!(parse_pid(text).is_err(), "{text:?}");
        }
    }
}
