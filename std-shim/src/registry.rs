//! The process-wide table of managers, like PyTorch's `managers` map: the
//! default manager (started on first use) and every manager reached by handle.
//! A `pipe:` handle names another process's private manager, which nobody else
//! can reach; it maps to this process's default manager.
//!
//! The registry's lock is a leaf: nothing else is locked while it is held.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use libshm_core::handshake::ManagerHandle;

use crate::config::Config;
use crate::error::Error;
use crate::link::{Link, Origin};
use crate::wire::TransportKind;

struct Registry {
    config: Option<Config>,
    default: Option<(ManagerHandle, Arc<Link>)>,
    by_handle: BTreeMap<ManagerHandle, Arc<Link>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    config: None,
    default: None,
    by_handle: BTreeMap::new(),
});

fn lock() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    fn config(&mut self) -> Result<&Config, Error> {
        if self.config.is_none() {
            self.config = Some(Config::from_env()?);
        }
        self.config.as_ref().ok_or(Error::NoManagerExecutable)
    }
}

/// Replaces the process-wide configuration.
pub(crate) fn install(config: Config) {
    lock().config = Some(config);
}

/// The process-wide configuration (from the environment unless installed).
pub(crate) fn config() -> Result<Config, Error> {
    lock().config().cloned()
}

/// This process's default manager, started on first use.
pub(crate) fn default_link() -> Result<Arc<Link>, Error> {
    let mut registry = lock();
    if let Some((_, link)) = &registry.default {
        return Ok(Arc::clone(link));
    }
    let config = registry.config()?.clone();
    let (handle, link) = launch(&config)?;
    let link = Arc::new(link);
    if let Some(sizes) = config.get_pool() {
        link.start_pool(sizes);
    }
    registry.default = Some((handle, Arc::clone(&link)));
    Ok(link)
}

/// Starts a manager over the configured transport and links to it.
fn launch(config: &Config) -> Result<(ManagerHandle, Link), Error> {
    Ok(match config.get_transport() {
        TransportKind::Unix => {
            let launcher = config.launcher()?;
            let launched = crate::fork_gate::exec_at_once(|| launcher.launch())?;
            tracing::debug!(handle = %launched.handle, pid = launched.pid, "started manager");
            let link = Link::new(launched.handle, Origin::Launched, config);
            (launched.handle, link)
        }
        TransportKind::Pipe => {
            let launched = config.launch_over_pipes()?;
            (launched.handle, Link::over_pipes(launched, config))
        }
    })
}

/// The link to the manager at `handle`, shared by everyone in this process
/// who uses that handle. Connects lazily.
pub(crate) fn link_for(handle: ManagerHandle) -> Result<Arc<Link>, Error> {
    let mut registry = lock();
    if let Some((default_handle, link)) = &registry.default
        && *default_handle == handle
    {
        return Ok(Arc::clone(link));
    }
    if let Some(link) = registry.by_handle.get(&handle) {
        return Ok(Arc::clone(link));
    }
    if libshm_pipe::is_pipe_handle(&handle) {
        drop(registry);
        tracing::debug!(
            "{handle} is another process's private manager; using this process's default manager"
        );
        return default_link();
    }
    let config = registry.config()?.clone();
    let link = Arc::new(Link::new(handle, Origin::Given, &config));
    if let Some(sizes) = config.get_pool() {
        link.start_pool(sizes);
    }
    registry.by_handle.insert(handle, Arc::clone(&link));
    Ok(link)
}

/// A link to a manager started for the caller alone (not the default).
pub(crate) fn launched_link(config: &Config) -> Result<Arc<Link>, Error> {
    let (handle, link) = launch(config)?;
    let link = Arc::new(link);
    if let Some(sizes) = config.get_pool() {
        link.start_pool(sizes);
    }
    lock().by_handle.insert(handle, Arc::clone(&link));
    Ok(link)
}

/// Removes `link` from the table, as the default or under any handle; its
/// connection closes when the last user of the link lets go of it.
pub(crate) fn forget(link: &Arc<Link>) {
    let mut registry = lock();
    if registry
        .default
        .as_ref()
        .is_some_and(|(_, default)| Arc::ptr_eq(default, link))
    {
        registry.default = None;
    }
    registry
        .by_handle
        .retain(|_, known| !Arc::ptr_eq(known, link));
}
