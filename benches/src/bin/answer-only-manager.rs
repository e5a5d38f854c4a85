//! The ceiling of any manager: speaks the handshake and answers `OK` to
//! every registration, and keeps nothing. Whatever a client does through it
//! is the most that a manager could let that client do, so the benches
//! measure it beside ours and PyTorch's to show how much of a gap is left to
//! close on the manager's side.
//!
//! It reaps nothing: run it only for a measurement, never as a manager.
//!
//!   answer-only-manager [--spin MICROSECONDS] [--name-prefix IGNORED]
//!
//! With `--spin`, it polls without sleeping for that long after each
//! answer, like a manager that spins (ours does by default).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

/// PyTorch's frame: a registration when its byte at `FREE_AT` is 0.
const FRAME_LEN: usize = 68;
const FREE_AT: usize = 4;
/// Exit once no client has been connected this long, as PyTorch's does.
const LONELY: Duration = Duration::from_secs(2);

struct Connection {
    stream: UnixStream,
    /// How far into a frame the bytes read so far end.
    offset: usize,
}

fn main() {
    match run() {
        Ok(()) => {}
        Err(err) => {
            println!("ERROR: {err}");
            std::process::exit(1);
        }
    }
}

fn run() -> std::io::Result<()> {
    let spin = spin_from_args()?;
    let dir = private_dir()?;
    let socket = dir.join("manager.sock");
    let listener = UnixListener::bind(&socket)?;
    listener.set_nonblocking(true)?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", socket.display())?;
        stdout.flush()?;
    }
    serve(&listener, spin);
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_dir(&dir);
    Ok(())
}

fn spin_from_args() -> std::io::Result<Duration> {
    let mut spin = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--spin", Some(micros)) => {
                let micros = micros
                    .parse()
                    .map_err(|_| std::io::Error::other(format!("bad --spin {micros:?}")))?;
                spin = Duration::from_micros(micros);
            }
            ("--name-prefix", Some(_)) => {}
            (other, _) => return Err(std::io::Error::other(format!("unknown argument {other}"))),
        }
    }
    Ok(spin)
}

/// A fresh `torch-shm-dir-*` directory only we can enter.
fn private_dir() -> std::io::Result<PathBuf> {
    let tmp = std::env::var_os("TMPDIR").unwrap_or_else(|| "/tmp".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let dir = Path::new(&tmp).join(format!(
        "torch-shm-dir-answer-{}-{nanos}",
        std::process::id()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

fn serve(listener: &UnixListener, spin: Duration) {
    let mut connections: Vec<Connection> = Vec::new();
    let mut lonely_since = Some(Instant::now());
    let mut answered_at = Instant::now() - spin;
    loop {
        if lonely_since.is_some_and(|since| since.elapsed() >= LONELY) {
            return;
        }
        let timeout = if answered_at.elapsed() < spin {
            Timespec::default()
        } else {
            Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            }
        };
        let mut fds: Vec<PollFd<'_>> = std::iter::once(PollFd::new(listener, PollFlags::IN))
            .chain(
                connections
                    .iter()
                    .map(|c| PollFd::new(&c.stream, PollFlags::IN)),
            )
            .collect();
        if rustix::event::poll(&mut fds, Some(&timeout)).is_err() {
            continue;
        }
        let ready: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
        drop(fds);
        let mut index = connections.len();
        while index > 0 {
            index -= 1;
            if !ready[index + 1] {
                continue;
            }
            match answer(&mut connections[index]) {
                Ok(0) => {}
                Ok(_) => answered_at = Instant::now(),
                Err(_) => {
                    connections.swap_remove(index);
                }
            }
        }
        if ready[0] {
            while let Ok((stream, _)) = listener.accept() {
                if stream.set_nonblocking(true).is_ok() {
                    connections.push(Connection { stream, offset: 0 });
                }
            }
        }
        lonely_since = match (connections.is_empty(), lonely_since) {
            (true, None) => Some(Instant::now()),
            (true, since) => since,
            (false, _) => None,
        };
    }
}

/// Reads what `connection` sent and answers its registrations; returns how
/// many, or an error once it hung up.
fn answer(connection: &mut Connection) -> std::io::Result<usize> {
    let mut bytes = [0u8; FRAME_LEN * 64];
    let read = match connection.stream.read(&mut bytes) {
        Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
        Ok(read) => read,
        Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(0),
        Err(err) => return Err(err),
    };
    let mut registrations = 0;
    for &byte in &bytes[..read] {
        if connection.offset == FREE_AT && byte == 0 {
            registrations += 1;
        }
        connection.offset = (connection.offset + 1) % FRAME_LEN;
    }
    let answers = b"OK".repeat(registrations);
    connection.stream.write_all(&answers)?;
    Ok(registrations)
}
