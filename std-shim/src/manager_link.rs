//! This process's connection to one manager daemon, as users hold it.

use std::sync::Arc;

use libshm_core::flags::{MapFlags, OpenMode};
use libshm_core::handshake::ManagerHandle;
use libshm_core::name::SegmentName;

use crate::config::Config;
use crate::error::Error;
use crate::link::Link;
use crate::registry;
use crate::segment::SharedSegment;

/// Fresh names tried when the previous ones already exist.
const NAME_ATTEMPTS: u32 = 8;

/// This process's link to a manager daemon: what segments are registered
/// through. Cheap to clone; every clone (and every `ManagerLink` obtained for
/// the same handle) shares one connection, and so does every segment created
/// or opened through it.
///
/// The connection closes when the last of those is gone and the link has
/// been [closed](Self::close) (the process-wide table keeps links until
/// then). A manager that nobody is connected to exits after its shutdown
/// timeout (2 s), unlinking whatever is still registered.
#[derive(Clone, Debug)]
pub struct ManagerLink {
    link: Arc<Link>,
}

impl ManagerLink {
    /// This process's default manager, started on first use with the
    /// process-wide [`Config`] (PyTorch's behaviour).
    pub fn default_for_process() -> Result<Self, Error> {
        registry::default_link().map(|link| Self { link })
    }

    /// The manager at `handle`, as printed by a manager or shared by another
    /// process (parse one from text with [`str::parse`]). Connects on first
    /// use; if that manager has died by then, this process's default manager
    /// takes over.
    ///
    /// A `pipe:<pid>` handle names another process's private manager, which
    /// only that process can reach. It yields this process's default manager
    /// instead: any manager protects what this process opens.
    pub fn connect(handle: &ManagerHandle) -> Result<Self, Error> {
        registry::link_for(*handle).map(|link| Self { link })
    }

    /// Starts a manager of its own with `config` (not the process default),
    /// over the transport `config` names.
    pub fn launch(config: &Config) -> Result<Self, Error> {
        registry::launched_link(config).map(|link| Self { link })
    }

    /// The handle other processes use to reach this manager. A private pipe
    /// manager's handle is `pipe:<pid>`; processes given it use their own.
    pub fn handle(&self) -> ManagerHandle {
        self.link.handle()
    }

    /// Segments of `size` data bytes ready in this manager's pool (see
    /// [`Config::pool`](crate::Config::pool)); 0 without one.
    pub fn pooled(&self, size: usize) -> usize {
        self.link.pool().map_or(0, |pool| pool.ready(size))
    }

    /// Creates a segment with a fresh name and `size` bytes of user data.
    pub fn create(&self, size: usize) -> Result<SharedSegment, Error> {
        if let Some(segment) = SharedSegment::from_pool(&self.link, size) {
            return Ok(segment);
        }
        // A name someone else took first (another user may create files in
        // /dev/shm) is skipped for the next.
        let mut attempts = 0;
        loop {
            let name = crate::naming::next_name(self.link.prefix())?;
            match SharedSegment::create_with(Arc::clone(&self.link), name, size) {
                Err(Error::Exists { .. }) if attempts < NAME_ATTEMPTS => attempts += 1,
                created => return created,
            }
        }
    }

    /// Creates a segment named `name` (it must not exist yet).
    pub fn create_named(&self, name: &SegmentName, size: usize) -> Result<SharedSegment, Error> {
        SharedSegment::create_with(Arc::clone(&self.link), *name, size)
    }

    /// Opens an existing segment and maps its header plus `size` bytes.
    pub fn open(&self, name: &SegmentName, size: usize) -> Result<SharedSegment, Error> {
        SharedSegment::open_with(Arc::clone(&self.link), *name, Some(size))
    }

    /// Opens an existing segment and maps all of it.
    pub fn open_whole(&self, name: &SegmentName) -> Result<SharedSegment, Error> {
        SharedSegment::open_with(Arc::clone(&self.link), *name, None)
    }

    /// Creates or opens by ATen flags: `SHAREDMEM|EXCLUSIVE` creates,
    /// `SHAREDMEM|NOCREATE` opens; anything ATen's refcounted allocator refuses
    /// is refused here too.
    pub fn map_with_flags(
        &self,
        name: &SegmentName,
        flags: MapFlags,
        size: usize,
    ) -> Result<SharedSegment, Error> {
        match flags.refcounted_mode()? {
            OpenMode::CreateExclusive => self.create_named(name, size),
            OpenMode::OpenExisting => self.open(name, size),
        }
    }

    /// Writes deferred releases and waits until the manager has answered every
    /// registration (pipelined mode otherwise collects answers lazily).
    pub fn settle(&self) -> Result<(), Error> {
        self.link.settle()
    }

    /// Segments this process holds through this manager.
    pub fn held(&self) -> usize {
        self.link.held()
    }

    /// Lets go of this manager: tells it every release still deferred,
    /// removes the link from the process-wide table (so the next
    /// [`connect`](Self::connect) to its handle, or the next use of the
    /// default manager, makes a new one), and drops this clone.
    ///
    /// The connection itself closes once no other clone and no segment
    /// created or opened through it is left; those keep working until then.
    /// A manager we [launched](Self::launch) that has no other client then
    /// exits after its shutdown timeout; a manager shared with other
    /// processes goes on serving them.
    pub fn close(self) -> Result<(), Error> {
        let settled = self.link.settle();
        registry::forget(&self.link);
        settled
    }
}
