"""PyTorch side of libshm-rs's interop tests. One scenario per invocation:

    python interop.py <scenario>

Environment: SHMCTL (our CLI), and for `rust-creates` the manager our side
uses is whatever SHMCTL starts. Prints `pids=<pid,...>` (every process that
may have created segments) and `PASS`; anything else is a failure.
"""
import os
import subprocess
import sys
import time

import torch
import torch.multiprocessing as mp

# The shared module beside this script: no bytecode cache in the source tree.
sys.dont_write_bytecode = True
from workload import echo_round_trips, report_pids  # noqa: E402

mp.set_sharing_strategy("file_system")


def refcount(name):
    """The refcount in a segment's header, read the way any process can."""
    with open("/dev/shm" + name.decode() if isinstance(name, bytes) else "/dev/shm" + name, "rb") as f:
        return int.from_bytes(f.read(4), sys.byteorder, signed=True)


# --- our manager as a drop-in torch_shm_manager --------------------------------

def _pool_square(n):
    return torch.full((256,), float(n)) ** 2, os.getpid()


class Squares(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.full((1024,), float(i)), os.getpid()


def drop_in():
    # torch starts <package>/bin/torch_shm_manager; the test checks it is ours.
    print("manager=" + os.path.join(os.path.dirname(torch.__file__), "bin", "torch_shm_manager"), flush=True)
    pids = [os.getpid()]
    for method in ("spawn", "fork"):
        pids.append(echo_round_trips(method, 1000))

    with mp.get_context("spawn").Pool(2) as pool:
        for n, (t, pid) in enumerate(pool.map(_pool_square, range(16))):
            assert torch.equal(t, torch.full((256,), float(n)) ** 2)
            pids.append(pid)

    loader = torch.utils.data.DataLoader(Squares(), batch_size=4, num_workers=2, prefetch_factor=4)
    seen = 0
    for batch, worker_pids in loader:
        assert batch.shape == (4, 1024)
        for row in range(4):
            assert torch.all(batch[row] == batch[row][0])
        pids.extend(int(p) for p in worker_pids)
        seen += 4
        time.sleep(0.01)  # a slow consumer: prefetched batches wait in transit
    assert seen == 64

    report_pids(pids)
    print("PASS")


# --- a segment created by PyTorch, opened by Rust ------------------------------

def torch_creates():
    t = torch.full((4096,), 7, dtype=torch.uint8)
    storage = t.untyped_storage()
    handle, name, size = storage._share_filename_cpu_()
    assert refcount(name) == 1
    rust = subprocess.Popen(
        [os.environ["SHMCTL"], "open", "--manager", handle.decode(), "--name", name.decode(),
         "--size", str(size), "--expect", "7", "--fill", "9", "--hold"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = rust.stdout.readline()
    assert "refcount=2" in line, line  # Rust sees PyTorch's reference and its own
    assert refcount(name) == 2  # and PyTorch sees Rust's
    assert torch.all(t == 9), "Rust's write is visible to PyTorch"
    t.fill_(11)
    rust.stdin.write("check 11\n")
    rust.stdin.flush()
    assert rust.stdout.readline().startswith("ok refcount=2"), "PyTorch's write is visible to Rust"
    rust.stdin.close()
    assert rust.wait() == 0
    assert refcount(name) == 1, "Rust released its reference"
    report_pids([os.getpid()])
    print("PASS")


# --- a segment created by Rust, opened by PyTorch ------------------------------

def rust_creates():
    rust = subprocess.Popen(
        [os.environ["SHMCTL"], "create", "--size", "4096", "--fill", "5", "--hold"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    fields = dict(kv.split("=", 1) for kv in rust.stdout.readline().split())
    handle, name, size = fields["handle"], fields["name"], int(fields["size"])
    storage = torch.UntypedStorage._new_shared_filename_cpu(handle.encode(), name.encode(), size)
    t = torch.tensor([], dtype=torch.uint8).set_(storage)
    assert torch.all(t == 5), "Rust's data is visible to PyTorch"
    assert refcount(name) == 2
    t.fill_(13)
    rust.stdin.write("check 13\n")
    rust.stdin.flush()
    reply = rust.stdout.readline()
    assert reply.startswith("ok refcount=2"), reply
    del t, storage  # PyTorch releases its reference and tells our manager
    rust.stdin.write("refcount\n")
    rust.stdin.flush()
    assert rust.stdout.readline().strip() == "refcount=1"
    rust.stdin.close()
    assert rust.wait() == 0
    assert not os.path.exists("/dev/shm" + name), "the last user unlinked it"
    report_pids([os.getpid(), rust.pid])
    print("PASS")


# --- share handles: a reference in transit, taken by one side, dropped by the other

def rust_shares():
    # Our side shares and exits before PyTorch opens: the handle's reference
    # alone keeps the segment, and our manager keeps serving for it.
    out = subprocess.run(
        [os.environ["SHMCTL"], "create", "--size", "4096", "--fill", "6", "--share"],
        check=True, stdout=subprocess.PIPE, text=True).stdout
    size, name, handle = out.strip().split(" ", 2)
    assert refcount(name) == 1, "only the reference in transit is left"
    # What torch.multiprocessing's rebuild_storage_filename does.
    storage = torch.UntypedStorage._new_shared_filename_cpu(handle.encode(), name.encode(), int(size))
    storage._shared_decref()
    assert refcount(name) == 1, "PyTorch's own reference replaced the one in transit"
    t = torch.tensor([], dtype=torch.uint8).set_(storage)
    assert torch.all(t == 6), "Rust's data is visible to PyTorch"
    del t, storage
    assert not os.path.exists("/dev/shm" + name), "the last user unlinked it"
    report_pids([os.getpid()])
    print("PASS")


def torch_shares():
    # PyTorch shares as it pickles (_shared_incref) and drops its tensor
    # before our side opens the handle.
    t = torch.full((4096,), 8, dtype=torch.uint8)
    storage = t.untyped_storage()
    handle, name, size = storage._share_filename_cpu_()
    storage._shared_incref()
    del t, storage
    assert refcount(name) == 1, "only the reference in transit is left"
    share = f"{size} {name.decode()} {handle.decode()}"
    rust = subprocess.Popen(
        [os.environ["SHMCTL"], "open", "--share", share, "--expect", "8", "--hold"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = rust.stdout.readline()
    assert "refcount=1" in line, line  # ours replaced the one in transit
    rust.stdin.close()
    assert rust.wait() == 0
    assert not os.path.exists("/dev/shm" + name.decode()), "the last user unlinked it"
    report_pids([os.getpid(), rust.pid])
    print("PASS")


# --- a child holding shared tensors is SIGKILLed while the parent lives on ------

def _hold_tensors(q_in, q_out, count):
    # Rebuilding the parent's tensor connects this process to the parent's
    # manager; its own shared tensors then register there too (PyTorch uses
    # the first manager it knows).
    first = q_in.get()
    held = [first] + [torch.full((2048,), float(i)) for i in range(count)]
    names = []
    for t in held[1:]:
        handle, name, _ = t.untyped_storage()._share_filename_cpu_()
        names.append(name.decode())
    q_out.put((os.getpid(), handle.decode(), names))
    time.sleep(3600)


def child_killed():
    grace = float(os.environ.get("REAP_GRACE", "2"))
    ctx = mp.get_context("spawn")
    q_in, q_out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_hold_tensors, args=(q_in, q_out, 20))
    p.start()
    # The parent stays connected to its manager for the whole test, so the
    # manager keeps running and must reap while the parent goes on.
    keep = torch.zeros(16)
    parent_handle, _, _ = keep.untyped_storage()._share_filename_cpu_()
    q_in.put(keep)
    pid, child_handle, names = q_out.get()
    assert child_handle == parent_handle.decode(), "the child uses the parent's manager"
    assert len(names) == 20 and all(os.path.exists("/dev/shm" + n) for n in names)
    os.kill(pid, 9)
    killed_at = time.monotonic()
    p.join()
    while any(os.path.exists("/dev/shm" + n) for n in names):
        if time.monotonic() - killed_at > grace + 1:
            left = [n for n in names if os.path.exists("/dev/shm" + n)]
            raise AssertionError(f"{len(left)} segments outlived the grace period: {left[:3]}")
        time.sleep(0.05)
    print(f"reaped 20 segments {time.monotonic() - killed_at:.2f}s after SIGKILL", flush=True)
    assert keep.sum() == 0
    report_pids([os.getpid(), pid])
    print("PASS")


if __name__ == "__main__":
    {"drop-in": drop_in, "torch-creates": torch_creates, "rust-creates": rust_creates,
     "rust-shares": rust_shares, "torch-shares": torch_shares,
     "child-killed": child_killed}[sys.argv[1]]()
