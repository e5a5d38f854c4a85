//! One process's relationship with one manager: the connection, the names it
//! holds through it, and recovery when the manager dies.
//!
//! The connection is a [`Wire`]: a Unix socket or the pipes to a private
//! manager. Which one changes nothing here but how a manager is reached again.
//! A Unix manager is reached by its handle; a pipe manager cannot be reached
//! again at all, so a link that needs a new connection to one starts a new
//! one.
//!
//! The connection is one of two states ([`Session`]): connected, with every
//! name held registered there, or disconnected. There is one way into
//! *connected*, [`LinkState::enter`], and it registers everything held first,
//! so no path (first use, recovery, a retry after a failed recovery) can
//! forget a name.
//!
//! Recovery: a failed call (the manager was killed, say) drops the connection
//! (releasing there, without waiting, what it held: the manager may only have
//! been slow, and would count the holds of a closed connection as dead),
//! finds a live manager (a new one started by us if the dead one was ours,
//! else this process's default manager), re-registers every name still held,
//! and carries on. After a `fork` the child never touches the parent's
//! connection: the first call in the child notices the new pid and connects
//! afresh (over pipes: to a new private manager of its own), holding nothing.
//!
//! Lock order: a link's lock may be held while taking the registry's lock or
//! the default link's lock; the registry never holds its lock while taking a
//! link's.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::time::Duration;

use libshm_core::client::{AckMode, ClientError, ClientFault};
use libshm_core::frame::Frame;
use libshm_core::handshake::ManagerHandle;
use libshm_core::name::{NamePrefix, SegmentName};
use libshm_core::transport::Transport;
use libshm_unix::{SharedJournal, UnixTransport};

use crate::client::Client;
use crate::config::{Config, PipeManager};
use crate::error::Error;
use crate::error_chain::Chain;
use crate::naming::current_pid;
use crate::pool::Pool;
use crate::registry;
use crate::wire::{TransportKind, Wire, WireError};

/// Frames one connection queues (deferred releases) and leaves unanswered at most.
const WINDOW: usize = 64;

/// A connection: the session owns the journal memory it may hand over.
type WireClient = Client<Wire, WINDOW, SharedJournal>;

/// Where a link's manager came from, which decides how to replace it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Started by this process: start another.
    Launched,
    /// Given to us by handle: fall back to this process's default manager.
    Given,
}

/// A shared, lockable link to one manager.
#[derive(Debug)]
pub(crate) struct Link {
    /// Prefix of names created through this link, fixed when it was made so
    /// the allocation path never consults the process-wide configuration.
    prefix: NamePrefix,
    state: Mutex<LinkState>,
    /// Segments made ahead of time, when the configuration asks for them.
    pool: OnceLock<Arc<Pool>>,
}

#[derive(Debug)]
struct LinkState {
    handle: ManagerHandle,
    origin: Origin,
    /// How the current manager is reached.
    kind: TransportKind,
    mode: AckMode,
    timeout: Option<Duration>,
    /// The process `session` and `held` belong to.
    pid: u32,
    session: Session,
    /// Whether to offer journals to Unix managers.
    offer_journal: bool,
    /// Prefix of the names this link creates (told to a manager it revives).
    prefix: NamePrefix,
    /// The configuration the link was made with: a manager that replaces
    /// its own (a fork's, a recovery's) is started with it, so it accepts
    /// the link's names (the process-wide one may name another prefix).
    config: Config,
    /// Names this process holds through the link, with repeats. While
    /// connected, every one of them is registered with the manager.
    held: HashMap<SegmentName, u32>,
    /// A pidfd of the private pipe manager this process started, if that
    /// is the manager: given up on, it is killed, not left to unlink, at
    /// its end of file, the names its successor now holds for us.
    pipe_manager: Option<OwnedFd>,
}

/// Whether the link has a manager connection.
#[derive(Debug, Default)]
enum Session {
    /// Not connected: never yet, lost, or left to the parent after a fork.
    #[default]
    Disconnected,
    /// Connected, everything held registered there.
    Connected(Box<WireClient>),
}

impl Link {
    /// A link to the Unix manager at `handle`; it connects on first use.
    pub(crate) fn new(handle: ManagerHandle, origin: Origin, config: &Config) -> Self {
        Self::with_state(
            handle,
            origin,
            TransportKind::Unix,
            Session::Disconnected,
            config,
        )
    }

    /// A link to a private manager this process just started, over its pipes.
    pub(crate) fn over_pipes(launched: PipeManager, config: &Config) -> Self {
        let client = Client::new(Wire::Pipe(launched.transport), config.get_ack_mode());
        let session = Session::Connected(Box::new(client));
        let link = Self::with_state(
            launched.handle,
            Origin::Launched,
            TransportKind::Pipe,
            session,
            config,
        );
        link.lock().pipe_manager = launched.pidfd;
        link
    }

    fn with_state(
        handle: ManagerHandle,
        origin: Origin,
        kind: TransportKind,
        session: Session,
        config: &Config,
    ) -> Self {
        let state = LinkState {
            handle,
            origin,
            kind,
            mode: config.get_ack_mode(),
            timeout: config.get_reply_timeout(),
            pid: current_pid(),
            session,
            offer_journal: config.get_journal(),
            prefix: *config.get_name_prefix(),
            config: config.clone(),
            held: HashMap::new(),
            pipe_manager: None,
        };
        Self {
            prefix: *config.get_name_prefix(),
            state: Mutex::new(state),
            pool: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts keeping segments of `sizes` ready (see [`Pool`]), once.
    pub(crate) fn start_pool(self: &Arc<Self>, sizes: &crate::PoolSizes) {
        self.pool.get_or_init(|| Pool::start(self, sizes));
    }

    /// The pool, if this link keeps one.
    pub(crate) fn pool(&self) -> Option<&Arc<Pool>> {
        self.pool.get()
    }

    /// The prefix for names created through this link.
    pub(crate) fn prefix(&self) -> &NamePrefix {
        &self.prefix
    }

    /// The manager's current handle (it changes when a dead manager is replaced).
    pub(crate) fn handle(&self) -> ManagerHandle {
        self.lock().handle
    }

    /// Names this process holds through the link, counting repeats.
    pub(crate) fn held(&self) -> usize {
        let mut state = self.lock();
        state.adopt_after_fork();
        state.held.values().map(|&n| n as usize).sum()
    }

    /// The lock, unless another thread holds it.
    fn lock_unless_busy(&self) -> Option<MutexGuard<'_, LinkState>> {
        match self.state.try_lock() {
            Ok(state) => Some(state),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Registers `name` before it is created or opened.
    pub(crate) fn register(&self, name: SegmentName) -> Result<(), Error> {
        Self::register_locked(self.lock(), name)
    }

    /// [`register`](Self::register), unless another thread holds the
    /// link's lock (`None`): for a thread that must not wait for it (see
    /// `fork_gate`).
    pub(crate) fn register_unless_busy(&self, name: SegmentName) -> Option<Result<(), Error>> {
        self.lock_unless_busy()
            .map(|state| Self::register_locked(state, name))
    }

    fn register_locked(
        mut state: MutexGuard<'_, LinkState>,
        name: SegmentName,
    ) -> Result<(), Error> {
        state.adopt_after_fork();
        let pid = state.pid as i32;
        let mut recovered = false;
        loop {
            let result = state
                .connected()
                .and_then(|client| client.register(pid, name).map_err(RegisterError::Client));
            match result {
                Ok(()) => break,
                Err(RegisterError::Client(ClientError::Fault(ClientFault::Refused(refused)))) => {
                    state.forget(&refused);
                    if refused == name {
                        return Err(Error::Refused {
                            handle: state.handle.to_string(),
                            name,
                        });
                    }
                    tracing::warn!(
                        "manager {} refused {refused}; it is not protected against crashes",
                        state.handle
                    );
                    break;
                }
                Err(err) => {
                    // A registration the error cut short may have reached
                    // the manager: it is taken back with the rest.
                    let in_flight = match err {
                        RegisterError::Client(ClientError::Poisoned)
                        | RegisterError::Connect(_) => None,
                        RegisterError::Client(_) => Some(name),
                    };
                    state.abandon(in_flight);
                    if recovered {
                        return Err(err.into_error(state.handle));
                    }
                    tracing::warn!(
                        "manager {} failed: {}; recovering",
                        state.handle,
                        err.display()
                    );
                    state.recover()?;
                    recovered = true;
                }
            }
        }
        *state.held.entry(name).or_insert(0) += 1;
        Ok(())
    }

    /// Tells the manager this process no longer uses `name`. Never fails: a
    /// manager that cannot be told is replaced, and the replacement is told
    /// only about names still held.
    pub(crate) fn release(&self, name: SegmentName, deferrable: bool) {
        Self::release_locked(self.lock(), name, deferrable);
    }

    /// [`release`](Self::release), unless another thread holds the link's
    /// lock (`None`).
    pub(crate) fn release_unless_busy(&self, name: SegmentName, deferrable: bool) -> Option<()> {
        self.lock_unless_busy()
            .map(|state| Self::release_locked(state, name, deferrable))
    }

    fn release_locked(mut state: MutexGuard<'_, LinkState>, name: SegmentName, deferrable: bool) {
        if state.pid != current_pid() {
            // A forked child dropping its parent's segment: not ours to release.
            return;
        }
        if !state.forget(&name) {
            return;
        }
        let pid = state.pid as i32;
        let Some(client) = state.client() else {
            return;
        };
        if let Err(err) = client.release(pid, name, deferrable) {
            tracing::warn!(
                "manager {} failed during a release: {err}; recovering",
                state.handle
            );
            // The release may not have been written: it goes with the rest.
            state.abandon(Some(name));
            if let Err(err) = state.recover() {
                tracing::warn!("could not recover a manager: {}", Chain(&err));
            }
        }
    }

    /// Writes deferred releases and waits for every outstanding reply.
    pub(crate) fn settle(&self) -> Result<(), Error> {
        let mut state = self.lock();
        state.adopt_after_fork();
        let handle = state.handle;
        match state.client() {
            Some(client) => client.settle().map_err(|source| Error::Manager {
                handle: handle.to_string(),
                source,
            }),
            None => Ok(()),
        }
    }
}

enum RegisterError {
    Connect(Error),
    Client(ClientError<WireError>),
}

impl RegisterError {
    fn into_error(self, handle: ManagerHandle) -> Error {
        match self {
            Self::Connect(err) => err,
            Self::Client(source) => Error::Manager {
                handle: handle.to_string(),
                source,
            },
        }
    }

    fn display(&self) -> String {
        match self {
            Self::Connect(err) => Chain(err).to_string(),
            Self::Client(err) => err.to_string(),
        }
    }
}

impl LinkState {
    fn adopt_after_fork(&mut self) {
        let pid = current_pid();
        if pid != self.pid {
            // Closing our copy of the parent's socket leaves the parent's intact.
            self.pid = pid;
            self.session = Session::Disconnected;
            self.held.clear();
            // The parent's; closing our copy signals nothing.
            self.pipe_manager = None;
        }
    }

    /// The connection, if connected.
    fn client(&mut self) -> Option<&mut WireClient> {
        match &mut self.session {
            Session::Connected(client) => Some(client),
            Session::Disconnected => None,
        }
    }

    /// Gives up the connection, if there is one. Its manager may still be
    /// alive (a reply timed out, say) and would end this process's holds
    /// there as dead registrations when it sees the close, although the
    /// process lives on and registers the same names elsewhere (the same
    /// manager, reconnected): a segment it then shares and lets go of counts
    /// as an orphan and is reaped in transit. So, first, everything held
    /// (and `in_flight`, a registration or release an error cut short) is
    /// released there, as far as that goes without waiting.
    ///
    /// Not over pipes: a pipe manager serves this process alone and ends
    /// with its pipes, unlinking every name it knows, released or not.
    /// Not after a fork either: the connection is the parent's
    /// ([`LinkState::adopt_after_fork`] drops the child's copy unused).
    fn abandon(&mut self, in_flight: Option<SegmentName>) {
        let Session::Connected(client) = std::mem::take(&mut self.session) else {
            return;
        };
        if matches!(client.transport(), Wire::Pipe(_)) {
            // A pipe manager unlinks every name it knows once its pipes
            // close, released or not: stopped first, it unlinks nothing.
            if let Some(pidfd) = self.pipe_manager.take()
                && let Err(errno) =
                    rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL)
            {
                tracing::debug!("could not stop the pipe manager given up on: {errno}");
            }
            return;
        }
        let pid = self.pid as i32;
        let releases = self
            .held
            .iter()
            .flat_map(|(&name, &count)| std::iter::repeat_n(name, count as usize))
            .chain(in_flight)
            .map(|name| Frame::release(pid, name));
        let handed_back = client.hand_back(releases, |wire, bytes| match wire {
            Wire::Unix(socket) => socket.try_send(bytes).map_err(WireError::Unix),
            Wire::Pipe(_) => Ok(0),
        });
        if !handed_back {
            tracing::debug!(
                "could not release every held name on the abandoned connection to manager {}",
                self.handle
            );
        }
    }

    /// Removes one hold of `name`; false if it was not held.
    fn forget(&mut self, name: &SegmentName) -> bool {
        match self.held.get_mut(name) {
            Some(count) if *count > 1 => *count -= 1,
            Some(_) => {
                self.held.remove(name);
            }
            None => return false,
        }
        true
    }

    /// The connection, made (and everything held registered) if need be.
    fn connected(&mut self) -> Result<&mut WireClient, RegisterError> {
        if matches!(self.session, Session::Disconnected) {
            let fresh = match self.kind {
                TransportKind::Unix => self.connect_unix(self.handle),
                // Nobody can reach a pipe manager again (after a fork, or a
                // recovery that failed): start one of our own.
                TransportKind::Pipe => self.launch_pipe(),
            };
            self.enter(fresh.map_err(RegisterError::Connect)?)
                .map_err(RegisterError::Connect)?;
        }
        match &mut self.session {
            Session::Connected(client) => Ok(client),
            Session::Disconnected => Err(RegisterError::Connect(Error::Manager {
                handle: self.handle.to_string(),
                source: ClientError::Poisoned,
            })),
        }
    }

    /// The one way into *connected*: registers everything held with
    /// `fresh`'s manager (nothing is registered there yet), waits for its
    /// answers, then makes it the link's connection. On failure the link
    /// stays disconnected, and what did get registered with `fresh` is
    /// released there again.
    fn enter(&mut self, mut fresh: WireClient) -> Result<(), Error> {
        // The old connection (and its journal memory) goes first.
        self.abandon(None);
        let registered = self.register_held(&mut fresh);
        self.session = Session::Connected(Box::new(fresh));
        if registered.is_err() {
            self.abandon(None);
        }
        registered
    }

    /// Connects to a Unix manager and, when pipelined, offers it a journal.
    fn connect_unix(&self, handle: ManagerHandle) -> Result<WireClient, Error> {
        let transport =
            UnixTransport::connect(&handle, self.timeout).map_err(|source| Error::Connect {
                handle: handle.to_string(),
                source,
            })?;
        let mut client = Client::new(Wire::Unix(transport), self.mode);
        if !self.offer_journal || self.mode == AckMode::Strict {
            return Ok(client);
        }
        let memory = match SharedJournal::create(SharedJournal::DEFAULT_CAPACITY) {
            Ok(memory) => memory,
            Err(err) => {
                tracing::debug!("no journal (using the socket): {err}");
                return Ok(client);
            }
        };
        // Accepted or declined, the connection goes on; the session keeps the
        // memory only if the manager took it.
        let offered =
            client.offer_journal(self.pid as i32, memory, |wire, bytes, memory| match wire {
                Wire::Unix(socket) => socket
                    .send_with_fd(bytes, memory.fd())
                    .map_err(WireError::Unix),
                Wire::Pipe(pipes) => pipes.send_all(bytes).map_err(WireError::Pipe),
            });
        match offered {
            Ok(_) => Ok(client),
            Err(source) => Err(Error::Manager {
                handle: handle.to_string(),
                source,
            }),
        }
    }

    /// Starts a private pipe manager for this link; it becomes the link's manager.
    fn launch_pipe(&mut self) -> Result<WireClient, Error> {
        let launched = self.config.launch_over_pipes()?;
        self.handle = launched.handle;
        self.kind = TransportKind::Pipe;
        self.origin = Origin::Launched;
        self.pipe_manager = launched.pidfd;
        Ok(Client::new(Wire::Pipe(launched.transport), self.mode))
    }

    /// Registers every name still held with `client`'s manager and waits
    /// for its answers.
    fn register_held(&self, client: &mut WireClient) -> Result<(), Error> {
        let pid = self.pid as i32;
        let manager_error = |source| Error::Manager {
            handle: self.handle.to_string(),
            source,
        };
        for (name, count) in &self.held {
            for _ in 0..*count {
                client.register(pid, *name).map_err(manager_error)?;
            }
        }
        client.settle().map_err(manager_error)
    }

    /// Reconnects to `handle`, or starts a manager that adopts it.
    fn revive(&mut self, handle: ManagerHandle) -> Result<WireClient, Error> {
        if let Ok(connected) = self.connect_unix(handle) {
            return Ok(connected);
        }
        let launcher = self.config.launcher()?.args([
            "--adopt",
            handle.as_str(),
            "--sweep-prefix",
            self.prefix.as_str(),
        ]);
        // Our manager answers with the same handle; one that cannot adopt
        // (PyTorch's ignores the option) with a handle of its own.
        let revived = crate::fork_gate::exec_at_once(|| launcher.launch())?.handle;
        self.handle = revived;
        self.connect_unix(revived)
    }

    /// A different manager: a new one of ours if the dead one was ours, else
    /// this process's default.
    fn replace_manager(&mut self, old: ManagerHandle) -> Result<WireClient, Error> {
        if self.origin == Origin::Launched {
            let launcher = self.config.launcher()?;
            let new = crate::fork_gate::exec_at_once(|| launcher.launch())?.handle;
            self.handle = new;
            return self.connect_unix(new);
        }
        let fallback = match registry::config()?.get_transport() {
            TransportKind::Unix => Some(registry::default_link()?.handle()),
            TransportKind::Pipe => None,
        };
        match fallback.filter(|handle| *handle != old && !libshm_pipe::is_pipe_handle(handle)) {
            Some(new) => {
                self.handle = new;
                self.connect_unix(new)
            }
            // This process does not share managers: the link gets a private
            // one (the default's pipes have room for one client only).
            None => self.launch_pipe(),
        }
    }

    /// Finds a live manager and registers everything still held with it.
    ///
    /// First choice is the same handle: reconnecting, or starting a manager
    /// that adopts the dead one's directory, so every process that knew the
    /// handle (and every handle already passed around) meets again there.
    /// Failing that, a manager of our own.
    fn recover(&mut self) -> Result<(), Error> {
        let old = self.handle;
        self.abandon(None);
        let fresh = match self.kind {
            TransportKind::Pipe => self.launch_pipe()?,
            TransportKind::Unix => match self.revive(old) {
                Ok(fresh) => fresh,
                Err(err) => {
                    tracing::debug!("could not revive manager {old}: {}", Chain(&err));
                    self.replace_manager(old)?
                }
            },
        };
        self.enter(fresh)?;
        tracing::info!(
            "manager {old} is gone; {} held segment(s) re-registered with {}",
            self.held.len(),
            self.handle
        );
        Ok(())
    }
}
