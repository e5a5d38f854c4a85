//! `shm-manager`: a drop-in replacement for PyTorch's `torch_shm_manager`.
//!
//! Run with no arguments it does what the original does: `setsid`, create a
//! private `torch-shm-dir-XXXXXX` directory with `manager.sock`, print the
//! socket path and a newline on stdout (or `ERROR: <why>` and exit 1), answer
//! every registration with `OK`, and once no client has been connected for
//! 2 s unlink every name still registered, remove the socket and exit.
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
//! unlinks every name still registered and exits. `libshm_pipe::Launcher`
//! starts it that way.

use std::io::{IsTerminal, Write};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use libshm::core::manager::ManagerConfig;
use libshm::core::name::NamePrefix;
use libshm::units::{parse_duration, parse_optional_duration};
use libshm::{ENV_PREFIX, ShmNamespace};
use libshm_pipe::{InheritError, ManagerEnds, REPLY_FD, REQUEST_FD};
use libshm_unix::{Adoption, Listener, RunDir};

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
    #[arg(long, default_value_t = 4_194_304)]
    max_names: usize,

    /// Accept only segment names starting with this prefix; a registration
    /// of any other name is answered `NO`. `/` accepts every name
    /// [default: $LIBSHM_NAME_PREFIX, else /torch_].
    #[arg(long)]
    name_prefix: Option<String>,

    /// Where to create the private socket directory [default: $TMPDIR or /tmp].
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

    /// After a burst, poll this long without sleeping (yielding the CPU), so a
    /// client that waits for each reply is answered without wake-ups. Helps
    /// protocol-bound loads, costs CPU the clients may need; `0` always sleeps.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    spin: Duration,

    /// More logging on stderr: -v info, -vv debug, -vvv trace (default: warnings).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Log errors only.
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
}

fn main() -> ExitCode {
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
    init_logging(&args);

    let config = match manager_config(&args) {
        Ok(config) => config,
        Err(message) => return fail(&message),
    };
    // Every look into /dev/shm goes through this one directory descriptor.
    let namespace = match ShmNamespace::for_current_user() {
        Ok(namespace) => namespace,
        Err(err) => return fail(&err.to_string()),
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
            Ok(Adoption::Adopted(dir)) => Ok(dir),
            Ok(Adoption::Served) => return point_at_live_manager(handle),
            Err(err) => return fail(&err.to_string()),
        },
        None => {
            let base = args.run_dir.clone().unwrap_or_else(RunDir::default_base);
            RunDir::create(&base).map_err(|err| (base, err))
        }
    };
    let listener = match dir {
        Ok(dir) => match Listener::bind(dir) {
            Ok(listener) => listener,
            Err(err) => return fail(&format!("could not bind the manager socket: {err}")),
        },
        Err((base, err)) => {
            return fail(&format!(
                "could not create the manager socket under {}: {err}",
                base.display()
            ));
        }
    };
    if let Err(err) = handshake(&format!("{}\n", listener.handle())) {
        tracing::error!("could not print the handle: {err}");
        return ExitCode::FAILURE;
    }
    tracing::info!(handle = %listener.handle(), "serving");
    let recovery = match &args.adopt {
        Some(_) => match NamePrefix::new(args.sweep_prefix.as_bytes()) {
            Ok(prefix) => Some(prefix),
            Err(err) => return fail(&format!("--sweep-prefix: {err}")),
        },
        None => None,
    };
    let tuning = libshm_unix::Tuning {
        spin: args.spin,
        recovery,
    };
    let summary = libshm_unix::serve_tuned(listener, config, &mut namespace, tuning);
    tracing::debug!(?summary, "exiting");
    ExitCode::SUCCESS
}

fn serve_pipe(
    args: &Args,
    ends: Result<ManagerEnds, InheritError>,
    config: ManagerConfig,
    mut namespace: ShmNamespace,
) -> ExitCode {
    let ends = match ends {
        Ok(ends) => ends,
        Err(err) => return fail(&format!("--pipe-fds {}: {err}", args.pipe_fds)),
    };
    let handle = libshm_pipe::pipe_handle(std::process::id());
    if let Err(err) = handshake(&format!("{handle}\n")) {
        tracing::error!("could not print the handle: {err}");
        return ExitCode::FAILURE;
    }
    tracing::info!(%handle, "serving one client over pipes");
    let summary = libshm_pipe::serve(ends, config, &mut namespace);
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

/// A duration that `off` disables (clap reads `Option` as "may be omitted").
#[derive(Clone, Copy, Debug)]
struct Switchable(Option<Duration>);

fn optional_duration(text: &str) -> Result<Switchable, String> {
    parse_optional_duration(text).map(Switchable)
}

/// Another manager adopted `handle` first (or it never died): wait until it
/// accepts connections, then hand the client that handle.
fn point_at_live_manager(handle: &std::path::Path) -> ExitCode {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::os::unix::net::UnixStream::connect(handle).is_err() {
        if std::time::Instant::now() >= deadline {
            return fail(&format!(
                "the manager at {} holds its directory but does not answer",
                handle.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match handshake(&format!("{}\n", handle.display())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn manager_config(args: &Args) -> Result<ManagerConfig, String> {
    Ok(ManagerConfig {
        shutdown_after: args.shutdown_timeout,
        reap_grace: args.reap_grace.0,
        frame_timeout: args.frame_timeout.0,
        silence_timeout: args.frame_timeout.0,
        linger: args.linger,
        max_names: args.max_names,
        name_prefix: Some(name_prefix(args)?),
        owner_uid: Some(rustix::process::geteuid().as_raw()),
        max_connections: args.max_clients,
        ..ManagerConfig::default()
    })
}

/// The names this manager accepts: `--name-prefix`, else `$LIBSHM_NAME_PREFIX`
/// (what a client of the same environment names its segments with), else
/// PyTorch's `/torch_`. Started as PyTorch starts it, with no arguments, it
/// thus never takes on another program's objects (`/sem.*`, say), which it
/// would unlink once their registering client is gone.
fn name_prefix(args: &Args) -> Result<NamePrefix, String> {
    let (text, source) = match &args.name_prefix {
        Some(text) => (text.clone(), "--name-prefix"),
        None => match std::env::var(ENV_PREFIX) {
            Ok(text) if !text.is_empty() => (text, ENV_PREFIX),
            Ok(_) | Err(std::env::VarError::NotPresent) => return Ok(NamePrefix::torch()),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!("{ENV_PREFIX} is not valid UTF-8"));
            }
        },
    };
    NamePrefix::new(text.as_bytes()).map_err(|err| format!("{source} {text:?}: {err}"))
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

fn fail(message: &str) -> ExitCode {
    tracing::error!("{message}");
    let _ = handshake(&format!("ERROR: {message}\n"));
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
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
