//! Bound Unix sockets, from `/proc/net/unix`, and which process holds each:
//! how live managers are found without connecting to them (a connection
//! would count as a client and keep an idle manager alive).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// `__SO_ACCEPTCON` in the Flags column: a listening socket.
const LISTENING: u32 = 0x10000;

/// One socket with a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) inode: u64,
    pub(crate) listening: bool,
    /// A server's accepted connections carry its path too.
    pub(crate) path: String,
}

/// Every socket bound to a filesystem path in every network namespace we
/// can see a process of: ours first, then each other one (a container's,
/// sharing our `/dev/shm`) through the first of its processes we may read.
/// A socket's inode is unique across namespaces.
pub(crate) fn bound() -> Vec<Entry> {
    let mut tables = vec![PathBuf::from("/proc/net/unix")];
    let mut seen = BTreeSet::new();
    if let Ok(ours) = std::fs::read_link("/proc/self/ns/net") {
        seen.insert(ours);
    }
    for pid in pids() {
        if let Ok(netns) = std::fs::read_link(format!("/proc/{pid}/ns/net"))
            && seen.insert(netns)
        {
            tables.push(PathBuf::from(format!("/proc/{pid}/net/unix")));
        }
    }
    let mut inodes = BTreeSet::new();
    tables
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| parse(&table))
        .filter(|entry| inodes.insert(entry.inode))
        .collect()
}

/// The pids in `/proc`.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// Whether process `pid` sees the filesystem as we do: the same mount
/// namespace, so a socket's path names the same file for both. `None` if
/// that cannot be read.
pub(crate) fn shares_our_mounts(pid: u32) -> Option<bool> {
    let ours = std::fs::read_link("/proc/self/ns/mnt").ok()?;
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?;
    Some(ours == theirs)
}

fn parse(table: &str) -> Vec<Entry> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode Path; the path may
            // hold spaces, so it is the rest of the line.
            let mut rest = line.trim_start();
            let mut fields = [""; 7];
            for field in &mut fields {
                let end = rest.find(char::is_whitespace)?;
                *field = &rest[..end];
                rest = rest[end..].trim_start();
            }
            let path = rest.trim_end();
            if !path.starts_with('/') {
                return None;
            }
            Some(Entry {
                inode: fields[6].parse().ok()?,
                listening: u32::from_str_radix(fields[3], 16).ok()? & LISTENING != 0,
                path: path.to_owned(),
            })
        })
        .collect()
}

/// Which process holds each of `inodes`, from `/proc/<pid>/fd` (processes
/// we may not inspect are not seen).
pub(crate) fn holders(inodes: &BTreeSet<u64>) -> BTreeMap<u64, u32> {
    let mut found = BTreeMap::new();
    for pid in pids() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(inode) = inode.filter(|i| inodes.contains(i)) {
                found.entry(inode).or_insert(pid);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_connected_and_unnamed_sockets() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 123456 /tmp/torch-shm-dir-abc/manager.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 123460 /tmp/torch-shm-dir-abc/manager.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03  99999\n\
            0000000000000000: 00000002 00000000 00010000 0001 01   777 @abstract\n\
            0000000000000000: 00000002 00000000 00010000 0001 01   778 /tmp/with space.sock\n";
        let entries = parse(table);
        assert_eq!(
            entries,
            vec![
                Entry {
                    inode: 123456,
                    listening: true,
                    path: "/tmp/torch-shm-dir-abc/manager.sock".into()
                },
                Entry {
                    inode: 123460,
                    listening: false,
                    path: "/tmp/torch-shm-dir-abc/manager.sock".into()
                },
                Entry {
                    inode: 778,
                    listening: true,
                    path: "/tmp/with space.sock".into()
                },
            ]
        );
    }

    #[test]
    fn finds_the_holder_of_a_socket_this_process_listens_on() {
        let dir = std::env::temp_dir().join(format!("libshm-sockets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("test.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let entry = bound()
            .into_iter()
            .find(|e| e.path == path.to_str().unwrap())
            .expect("listed");
        assert!(entry.listening);
        let holders = holders(&BTreeSet::from([entry.inode]));
        assert_eq!(holders.get(&entry.inode), Some(&std::process::id()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
