//! Bound Unix sockets, from `/proc/net/unix`, and which process holds each:
//! how live managers are found without connecting to them (a connection
//! would count as a client and keep an idle manager alive).

use std::collections::{BTreeMap, BTreeSet};

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

/// Every socket of this network namespace bound to a filesystem path.
pub(crate) fn bound() -> Vec<Entry> {
    std::fs::read_to_string("/proc/net/unix")
        .map(|table| parse(&table))
        .unwrap_or_default()
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
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for pid in procs
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
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
