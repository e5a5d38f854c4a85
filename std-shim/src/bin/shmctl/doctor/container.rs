//! Whether we run in a container, and which kind: the fix for a small
//! `/dev/shm` is a flag of whatever started the container.

use std::path::Path;

/// A container runtime, as far as it can be told from inside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Container {
    Kubernetes,
    Docker,
    Podman,
    /// Another (`container=` from systemd-nspawn, LXC, ...), by its name.
    Other(String),
}

impl Container {
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Kubernetes => "Kubernetes",
            Self::Docker => "Docker",
            Self::Podman => "Podman",
            Self::Other(name) => name,
        }
    }
}

/// Looks for the marks each runtime leaves: Kubernetes' service variables
/// and cgroup names first (its pods run under Docker or containerd too),
/// then Docker's `/.dockerenv`, Podman's `/run/.containerenv`, the
/// `container` variable other runtimes set, and cgroup paths.
pub(crate) fn detect() -> Option<Container> {
    let cgroup = std::fs::read_to_string("/proc/1/cgroup")
        .or_else(|_| std::fs::read_to_string("/proc/self/cgroup"))
        .unwrap_or_default();
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if env("KUBERNETES_SERVICE_HOST").is_some() || cgroup.contains("kubepods") {
        return Some(Container::Kubernetes);
    }
    if Path::new("/.dockerenv").exists() || cgroup.contains("/docker") {
        return Some(Container::Docker);
    }
    if Path::new("/run/.containerenv").exists() || env("container").as_deref() == Some("podman") {
        return Some(Container::Podman);
    }
    if let Some(name) = env("container") {
        return Some(Container::Other(name));
    }
    ["lxc", "containerd", "crio"]
        .into_iter()
        .find(|mark| cgroup.contains(mark))
        .map(|mark| Container::Other(mark.to_owned()))
}
