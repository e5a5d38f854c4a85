//! The benchmark's client processes: the manager benchmark re-executes itself
//! in this role, so every client is a real process with its own connection.

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};

use libshm::client::Client;
use libshm_core::client::AckMode;
use libshm_core::handshake::ManagerHandle;
use libshm_core::name::{NamePrefix, SegmentName};
use libshm_unix::UnixTransport;

const ROLE: &str = "LIBSHM_BENCH_CLIENT";

/// The prefix of the names clients register: a manager measured with them
/// must be started with `--name-prefix` set to it (PyTorch's ignores it).
pub const PREFIX: &str = "/benchreg_";

/// If this process was started as a benchmark client, runs it and exits.
/// Call first thing in a benchmark's `main`.
pub fn run_if_client() {
    let Ok(spec) = std::env::var(ROLE) else {
        return;
    };
    let code = match serve(&spec) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("bench client: {err}");
            1
        }
    };
    std::process::exit(code);
}

/// `handle|count|strict or window`: connects and prints `ready`, waits for a
/// line on stdin, registers and releases `count` fresh names, then prints
/// `done`. The two lines keep process start-up and exit off the clock.
fn serve(spec: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut parts = spec.split('|');
    let handle = ManagerHandle::new(parts.next().unwrap_or_default().as_bytes())?;
    let count: u64 = parts.next().unwrap_or_default().parse()?;
    let mode = match parts.next().unwrap_or_default() {
        "strict" => AckMode::Strict,
        window => AckMode::Pipelined {
            max_in_flight: window.parse()?,
        },
    };
    let transport = UnixTransport::connect(&handle, None)?;
    let mut client: Client<_, 64> = Client::new(transport, mode);
    let prefix = NamePrefix::new(PREFIX.as_bytes())?;
    let pid = std::process::id();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go)?;
    for i in 0..count {
        let name = SegmentName::generate(&prefix, pid, 0, i)?;
        client.register(pid as i32, name)?;
        client.release(pid as i32, name, false)?;
    }
    client.settle()?;
    writeln!(stdout, "done")?;
    stdout.flush()?;
    Ok(())
}

/// A started client, waiting for `go`.
pub struct BenchClient {
    child: Child,
    lines: std::io::BufReader<std::process::ChildStdout>,
}

impl BenchClient {
    /// Starts a client process against `handle` and returns once it is
    /// connected.
    pub fn spawn(handle: &ManagerHandle, count: u64, mode: AckMode) -> std::io::Result<Self> {
        let mode = match mode {
            AckMode::Strict => "strict".to_owned(),
            AckMode::Pipelined { max_in_flight } => max_in_flight.to_string(),
        };
        let mut child = Command::new(std::env::current_exe()?)
            .env(ROLE, format!("{handle}|{count}|{mode}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut client = Self {
            child,
            lines: std::io::BufReader::new(stdout),
        };
        client.expect_line("ready")?;
        Ok(client)
    }

    fn expect_line(&mut self, expected: &str) -> std::io::Result<()> {
        let mut line = String::new();
        self.lines.read_line(&mut line)?;
        if line.trim_end() == expected {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "bench client said {line:?}, expected {expected:?}"
            )))
        }
    }

    /// Lets it start.
    pub fn go(&mut self) -> std::io::Result<()> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        stdin.write_all(b"go\n")?;
        stdin.flush()
    }

    /// Waits until it has made its registrations.
    pub fn done(&mut self) -> std::io::Result<()> {
        self.expect_line("done")
    }

    /// Waits for the process to exit.
    pub fn finish(mut self) -> std::io::Result<()> {
        let status = self.child.wait()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other("bench client failed"))
        }
    }
}
