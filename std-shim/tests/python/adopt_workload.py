"""A file_system workload for `shmctl torch install`: tensors through
mp.Queue with fork and with spawn, and a DataLoader with workers. Checks
which manager served it, from the handle torch uses:

    python adopt_workload.py ours|pytorch

The serving process is found by its listening socket (/proc/net/unix, then
the /proc/<pid>/fd that holds it); it must run torch's bin/torch_shm_manager,
and for `ours` that binary must carry libshm-rs's identity. Prints
`served_by=<pid> <what>`, `pids=<pid,...>` and `PASS`.
"""
import os
import sys

import torch
import torch.multiprocessing as mp
import torch.utils.data

# The shared module beside this script: no bytecode cache in the source tree.
sys.dont_write_bytecode = True
from workload import echo_round_trips, report_pids  # noqa: E402

mp.set_sharing_strategy("file_system")

OUR_IDENTITY = b"libshm-rs shm-manager "
LISTENING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix's Flags


class Rows(torch.utils.data.Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, i):
        return torch.full((2048,), float(i)), os.getpid()


def serving_pid(handle):
    """The pid whose listening socket is bound at `handle`."""
    inodes = set()
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == handle and int(fields[3], 16) & LISTENING:
                inodes.add(fields[6])
    links = {f"socket:[{inode}]" for inode in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in links:
                    return int(pid)
            except OSError:
                pass
    raise AssertionError(f"nobody listens at {handle}")


def main():
    expect = sys.argv[1]
    manager = os.path.join(os.path.dirname(torch.__file__), "bin", "torch_shm_manager")
    pids = [os.getpid()]

    # Holding one shared tensor keeps the manager alive while we look at it.
    keep = torch.zeros(1024)
    handle, _, _ = keep.untyped_storage()._share_filename_cpu_()
    handle = handle.decode()

    for method in ("fork", "spawn"):
        pids.append(echo_round_trips(method, 4096))

    loader = torch.utils.data.DataLoader(Rows(), batch_size=4, num_workers=2)
    seen = 0
    for batch, worker_pids in loader:
        assert batch.shape == (4, 2048)
        assert all(torch.all(row == row[0]) for row in batch)
        pids.extend(int(p) for p in worker_pids)
        seen += len(batch)
    assert seen == 32

    pid = serving_pid(handle)
    exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    assert os.path.realpath(exe) == os.path.realpath(manager), (exe, manager)
    with open(f"/proc/{pid}/exe", "rb") as binary:
        ours = OUR_IDENTITY in binary.read()
    what = "ours" if ours else "pytorch"
    print(f"served_by={pid} {what} {exe}", flush=True)
    assert what == expect, f"torch ran {what}'s manager, expected {expect}'s"
    report_pids(pids)
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
