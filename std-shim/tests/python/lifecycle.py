"""Segment lifecycles under PyTorch's own use of the manager, per start method.

    python lifecycle.py <scenario> <fork|spawn|forkserver>

Every scenario starts the way real programs do: the parent shares a tensor
first, so it is connected to its manager before any child starts. Under
`fork` every child then inherits that connection (PyTorch keeps one socket per
manager handle in a process-wide map), so frames of several pids arrive on
one connection. Under `spawn` and `forkserver` a child knows no manager until
it unpickles a tensor (which names its creator's manager, and PyTorch uses the
first manager it knows); one that shares a tensor before that starts a manager
of its own.

Environment:
  PIDS_FILE       every process that may create segments appends "<pid> <start time>" here
                  (the test looks for `/torch_<pid>_*` names of these pids)
  REAP_GRACE      the manager's grace period in seconds (default 2)
  EXPECT_REAPING  `0` when the manager never reaps while clients live
                  (PyTorch's own): the scenarios then skip the checks that
                  dead processes' segments go away while the parent lives
  REPEAT          rounds of `child-killed` (default 1); prints the median delay

Prints `PASS` on success. A failure prints one `FAIL: <what went wrong>` line
(which names, how long after what) and exits 1.
"""
import os
import signal
import statistics
import sys
import threading
import time
import traceback

import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torch.utils.data._utils.collate import default_collate

mp.set_sharing_strategy("file_system")

GRACE = float(os.environ.get("REAP_GRACE", "2"))
EXPECT_REAPING = os.environ.get("EXPECT_REAPING", "1") != "0"
# How long a reaped name may outlive the event that orphaned it.
REAP_BOUND = GRACE + 1
# How long a name stays in transit in the in-transit scenarios.
TRANSIT = 5.0
# Bound for anything that involves starting a process (spawn imports torch).
SLOW = 120


class Failure(Exception):
    """The behaviour under test did not hold; the message says how."""


# --- helpers --------------------------------------------------------------------

def note_pid():
    """Records this process as one that may create segments: its pid and its
    start time (field 22 of /proc/self/stat), so that a later process given
    the same pid is not taken for it."""
    path = os.environ.get("PIDS_FILE")
    if path:
        with open("/proc/self/stat") as stat:
            started = stat.read().rsplit(")", 1)[1].split()[19]
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getpid()} {started}\n".encode())
        finally:
            os.close(fd)


def wait_while_alive(parent):
    """Sleeps while the test's main process lives: a child killed by the test
    holds what it holds until then, and one whose test died does not outlive
    it. (Under forkserver a child's parent is the fork server, hence the pid.)"""
    while True:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def storage_info(t):
    """(manager handle, name) of a shared tensor. Its storage is shared
    already, so this only reads what PyTorch knows about it."""
    handle, name, _ = t.untyped_storage()._share_filename_cpu_()
    return handle.decode(), name.decode()


def name_of(t):
    return storage_info(t)[1]


def exists(name):
    return os.path.exists("/dev/shm" + name)


def refcount(name):
    """The refcount in a segment's header, read as any process can."""
    with open("/dev/shm" + name, "rb") as f:
        return int.from_bytes(f.read(4), sys.byteorder, signed=True)


def refcount_or_none(name):
    try:
        return refcount(name)
    except FileNotFoundError:
        return None


def shm_names_of(pid):
    prefix = f"torch_{pid}_"
    return ["/" + n for n in os.listdir("/dev/shm") if n.startswith(prefix)]


def wait_gone(names, since, what):
    """Waits until none of `names` exists; fails once they outlive `since` by
    more than the grace period plus 1 s. Returns the delay."""
    names = list(names)
    while True:
        left = [n for n in names if exists(n)]
        elapsed = time.monotonic() - since
        if not left:
            return elapsed
        if elapsed > REAP_BOUND:
            counts = sorted({refcount_or_none(n) for n in left}, key=str)
            raise Failure(
                f"{what}: {len(left)} of {len(names)} still in /dev/shm {elapsed:.1f} s later "
                f"(grace {GRACE:g} s + 1 s; header refcounts {counts}): {left[:4]}")
        time.sleep(0.02)


def watch_while_in_transit(names, since, seconds, what):
    """Sleeps `seconds` while `names` wait in a queue, failing as soon as one
    is unlinked (the data would be lost)."""
    deadline = since + seconds
    while time.monotonic() < deadline:
        gone = [n for n in names if not exists(n)]
        if gone:
            raise Failure(
                f"{what}: {len(gone)} of {len(names)} unlinked "
                f"{time.monotonic() - since:.1f} s after the SIGKILL while in transit: {gone[:4]}")
        time.sleep(0.05)


def share_first():
    """The parent uses its manager before it starts any child."""
    keep = torch.zeros(16)
    keep.share_memory_()
    return keep


def check_kept(keep):
    name = name_of(keep)
    if not exists(name) or keep.sum() != 0:
        raise Failure(f"the parent's own tensor {name} was lost while the parent held it")


def kill(pid):
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def kill_child(p):
    """SIGKILLs child process `p`, checking that it was still there to be
    killed (one that had exited would have released what it held)."""
    killed = kill(p.pid)
    p.join()
    if p.exitcode != -signal.SIGKILL:
        raise Failure(f"child {p.pid} had already exited ({p.exitcode}) when it was killed")
    return killed


def check_rows(t, value, what):
    if not torch.all(t == value):
        raise Failure(f"{what} arrived corrupted")


# --- a SIGKILLed child holding 20 tensors it sent to the parent -------------------

def _send_and_hold(parent, q_in, q_out, count):
    note_pid()
    work = q_in.get()  # under spawn this connects us to the parent's manager
    held = [torch.full((2048,), float(k)) for k in range(count)]
    for t in held:
        q_out.put(t)
    wait_while_alive(parent)
    del work, held


def child_killed(method):
    ctx = mp.get_context(method)
    keep = share_first()
    handle, _ = storage_info(keep)
    delays = []
    for _ in range(int(os.environ.get("REPEAT", "1"))):
        q_in, q_out = ctx.Queue(), ctx.Queue()
        p = ctx.Process(target=_send_and_hold, args=(os.getpid(), q_in, q_out, 20), daemon=True)
        p.start()
        q_in.put(keep)
        received = [q_out.get(timeout=SLOW) for _ in range(20)]
        for k, t in enumerate(received):
            check_rows(t, float(k), f"tensor {k} of 20")
        if storage_info(received[0])[0] != handle:
            raise Failure("the child did not use the parent's manager")
        names = [name_of(t) for t in received]
        del received, t  # the parent received and dropped them: the child holds them alone
        killed = kill_child(p)
        if EXPECT_REAPING:
            delay = wait_gone(names, killed, "the 20 tensors of the child SIGKILLed while the parent lives")
            delays.append(delay)
            print(f"reaped 20 segments {delay:.2f} s after SIGKILL", flush=True)
    if len(delays) > 1:
        print("delays=" + ",".join(f"{d:.2f}" for d in delays), flush=True)
        print(f"median reap delay {statistics.median(delays):.2f} s over {len(delays)}", flush=True)
    check_kept(keep)


# --- mp.Pool(2) five times, each ended by terminate() -----------------------------

_report = None
_main_pid = None


def _pool_init(report, main_pid):
    global _report, _main_pid
    _report, _main_pid = report, main_pid
    note_pid()


def _double(t):
    return t * 2


def _hold_argument(t):
    mine = torch.full((1024,), 7.0)
    mine.share_memory_()
    _report.put((os.getpid(), name_of(t), name_of(mine)))
    wait_while_alive(_main_pid)  # until terminate() kills us, holding both


def pool(method):
    ctx = mp.get_context(method)
    keep = share_first()
    orphans = []
    last_drop = None
    for round_ in range(5):
        report = ctx.Queue()
        args = [torch.full((1024,), float(k)) for k in range(8)]
        held_args = [torch.full((1024,), 100.0 + k) for k in range(2)]
        with ctx.Pool(2, initializer=_pool_init, initargs=(report, os.getpid())) as workers:
            results = workers.map(_double, args)
            for k, r in enumerate(results):
                check_rows(r, 2.0 * k, f"round {round_}: result {k}")
            for t in held_args:
                workers.apply_async(_hold_argument, (t,))
            # Both workers now hold an argument tensor and one of their own.
            holding = [report.get(timeout=SLOW) for _ in held_args]
        # __exit__ called terminate(): both workers were killed holding them.
        for _, argument, own in holding:
            orphans += [argument, own]
        del args, held_args, results, r, t
        last_drop = time.monotonic()
    if EXPECT_REAPING:
        delay = wait_gone(orphans, last_drop,
                          "argument tensors and the workers' own, held by workers terminate() killed,"
                          " after the parent dropped its references")
        print(f"reaped what killed pool workers held {delay:.2f} s after the last round", flush=True)
    check_kept(keep)


# --- a DataLoader whose worker is SIGKILLed mid-epoch ----------------------------

ROWS, WIDTH, BATCH = 32, 256, 4
STALL_AT = 3 * BATCH  # the first row of batch 3, which goes to worker 1


class Rows(Dataset):
    """Rows of one table tensor. Under spawn and forkserver the table is
    pickled to each worker, which connects the worker to the parent's manager
    (as any dataset holding tensors does)."""

    def __init__(self, marks):
        self.table = torch.arange(ROWS * WIDTH, dtype=torch.float32).reshape(ROWS, WIDTH)
        self.marks = marks
        self.stall_at = None
        self.main_pid = os.getpid()

    def __len__(self):
        return ROWS

    def __getitem__(self, i):
        return self.table[i].clone(), i


def _mark(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _worker_init(_):
    note_pid()


def _collate(items):
    # In a worker, default_collate builds the batch in a new shared segment.
    rows, index = default_collate(items)
    dataset = get_worker_info().dataset
    first = int(index[0])
    if first == dataset.stall_at:
        _mark(dataset.marks, f"stalled {os.getpid()} {name_of(rows)}")
        wait_while_alive(dataset.main_pid)
    _mark(dataset.marks, f"done {first} {os.getpid()} {name_of(rows)}")
    return rows, index


def _read_marks(path):
    try:
        with open(path) as f:
            return [line.split() for line in f.read().splitlines()]
    except FileNotFoundError:
        return []


def _mapped_here(name):
    with open("/proc/self/maps") as f:
        return any(line.rstrip().endswith("/dev/shm" + name) for line in f)


def _kill_stalled_worker(marks, killed):
    """Kills the worker stalled in batch 3, once the other worker's batches 4
    and 6 have reached the parent (so none is stranded in the queue)."""
    deadline = time.monotonic() + SLOW
    while time.monotonic() < deadline:
        lines = _read_marks(marks)
        stalled = [m for m in lines if m[0] == "stalled"]
        others = {int(m[1]): m[3] for m in lines if m[0] == "done" and int(m[1]) > STALL_AT}
        if stalled and len(others) >= 2 and all(
                not exists(n) or _mapped_here(n) for n in others.values()):
            break
        time.sleep(0.05)
    else:
        print("warning: the other worker's batches were not seen arriving; some may be stranded",
              flush=True)
    stalled = [m for m in _read_marks(marks) if m[0] == "stalled"]
    if not stalled:
        return
    pid, batch = int(stalled[0][1]), stalled[0][2]
    # Everything the worker created: the batch it holds, and any earlier
    # batch it sent (the parent received and dropped those).
    names = sorted(set(shm_names_of(pid)) | {batch})
    killed.update(pid=pid, at=kill(pid))
    if EXPECT_REAPING:
        # Watched from here: the DataLoader may notice the death only at its
        # next status check, seconds later.
        try:
            killed["delay"] = wait_gone(
                names, killed["at"], "segments of the DataLoader worker SIGKILLed mid-epoch")
        except Failure as failure:
            killed["failure"] = str(failure)


def _epoch(loader, dataset, what):
    seen = 0
    for rows, index in loader:
        for j, i in enumerate(index.tolist()):
            check_rows(rows[j], dataset.table[i], f"{what}: row {i}")
        seen += len(index)
    if seen != ROWS:
        raise Failure(f"{what}: {seen} of {ROWS} rows")


def dataloader(method):
    keep = share_first()
    dataset = Rows(os.environ["PIDS_FILE"] + ".marks0")
    loader = DataLoader(dataset, batch_size=BATCH, num_workers=2, persistent_workers=False,
                        multiprocessing_context=method, collate_fn=_collate,
                        worker_init_fn=_worker_init)
    _epoch(loader, dataset, "epoch 0")

    marks = os.environ["PIDS_FILE"] + ".marks1"
    dataset.marks, dataset.stall_at = marks, STALL_AT
    killed = {}
    killer = threading.Thread(target=_kill_stalled_worker, args=(marks, killed))
    batches = iter(loader)
    killer.start()
    try:
        for _ in batches:
            pass
        raise Failure("epoch 1 ended although a worker was SIGKILLed")
    except RuntimeError as err:
        if "killed by signal" not in str(err) and "exited unexpectedly" not in str(err):
            raise
        print(f"the DataLoader raised, as PyTorch does: {err}", flush=True)
    finally:
        del batches
        killer.join()
    if "pid" not in killed:
        raise Failure("no worker stalled in batch 3 to be killed")
    dataset.marks, dataset.stall_at = os.environ["PIDS_FILE"] + ".marks2", None
    if "failure" in killed:
        raise Failure(killed["failure"])
    if EXPECT_REAPING:
        print(f"reaped the killed worker's segments {killed['delay']:.2f} s after SIGKILL", flush=True)

    _epoch(loader, dataset, "epoch 2")
    check_kept(keep)


# --- a tensor waiting in a queue after a co-holder was SIGKILLed -----------------

def _co_hold(parent, q_in, q_out):
    note_pid()
    t = q_in.get()
    q_out.put(("holding", name_of(t)))
    wait_while_alive(parent)
    del t


def _late_reader(control, data, q_out):
    note_pid()
    q_out.put("ready")
    if control.get(timeout=SLOW) != "go":
        return
    try:
        t = data.get(timeout=SLOW)
        intact = bool(torch.equal(t, torch.arange(4096, dtype=torch.float32)))
        q_out.put(("ok" if intact else "corrupted", name_of(t)))
        del t
    except Exception as err:  # noqa: BLE001 -- reported to the parent, which fails
        q_out.put(("error", f"{type(err).__name__}: {err}"))
    q_out.put("dropped")


def co_holder(method):
    ctx = mp.get_context(method)
    keep = share_first()
    to_holder, from_holder = ctx.Queue(), ctx.Queue()
    control, data, from_reader = ctx.Queue(), ctx.Queue(), ctx.Queue()
    holder = ctx.Process(target=_co_hold, args=(os.getpid(), to_holder, from_holder), daemon=True)
    reader = ctx.Process(target=_late_reader, args=(control, data, from_reader), daemon=True)
    holder.start()
    reader.start()
    if from_reader.get(timeout=SLOW) != "ready":
        raise Failure("the reader did not start")
    # Created after both children started: under fork neither inherits it.
    t = torch.arange(4096, dtype=torch.float32)
    t.share_memory_()
    name = name_of(t)
    to_holder.put(t)
    if from_holder.get(timeout=SLOW) != ("holding", name):
        raise Failure("the co-holder did not report the tensor")
    killed = kill_child(holder)
    data.put(t)  # pickled: its refcount now counts the handle in the queue
    del t
    # Once the queue's feeder has pickled it and the parent's reference is
    # gone, the dead co-holder's count and the pickle's remain.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and exists(name) and refcount_or_none(name) != 2:
        time.sleep(0.02)
    print(f"in transit with header refcount {refcount_or_none(name)} "
          "(the dead co-holder's and the pickle's)", flush=True)
    watch_while_in_transit([name], killed, TRANSIT,
                           "a tensor in a queue after its co-holder was SIGKILLed")
    control.put("go")
    verdict = from_reader.get(timeout=SLOW)
    if verdict != ("ok", name):
        raise Failure(f"the tensor in transit did not arrive intact: {verdict} "
                      f"({'gone from' if not exists(name) else 'still in'} /dev/shm)")
    if from_reader.get(timeout=SLOW) != "dropped":
        raise Failure("the reader did not drop the tensor")
    dropped = time.monotonic()
    reader.join()
    if EXPECT_REAPING:
        delay = wait_gone([name], dropped,
                          "the tensor whose co-holder was SIGKILLed, after the reader dropped it")
        print(f"reaped {delay:.2f} s after the reader dropped it", flush=True)
    check_kept(keep)


# --- a child SIGKILLed while 10 tensors it sent wait in the parent's queue --------

def _send_then_wait(parent, q, report):
    note_pid()
    # No tensor received first: under spawn and forkserver these tensors
    # register with a manager this child starts; under fork, with the
    # parent's, through the inherited connection.
    sent = [torch.full((2048,), float(k)) for k in range(10)]
    for t in sent:
        q.put(t)
    q.close()
    q.join_thread()  # every handle is in the pipe
    report.put([storage_info(t) for t in sent])
    wait_while_alive(parent)
    del sent


def child_killed_in_transit(method):
    ctx = mp.get_context(method)
    keep = share_first()
    q, report = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_send_then_wait, args=(os.getpid(), q, report), daemon=True)
    p.start()
    infos = report.get(timeout=SLOW)
    names = [name for _, name in infos]
    print(f"the child's tensors name manager {infos[0][0]}", flush=True)
    counts = sorted({refcount_or_none(n) for n in names}, key=str)
    print(f"in transit with header refcounts {counts} (the sender's and the pickle's)", flush=True)
    killed = kill_child(p)
    watch_while_in_transit(names, killed, TRANSIT, "tensors of a SIGKILLed child waiting in the queue")
    received = []
    for k in range(10):
        try:
            received.append(q.get(timeout=SLOW))
        except Exception as err:  # noqa: BLE001 -- the failure is the finding
            gone = [n for n in names if not exists(n)]
            raise Failure(f"tensor {k} of 10 lost in transit ({type(err).__name__}: {err}); "
                          f"{len(gone)} of 10 no longer in /dev/shm") from err
        check_rows(received[-1], float(k), f"tensor {k} of 10")
    print(f"all 10 arrived intact {time.monotonic() - killed:.1f} s after the SIGKILL", flush=True)
    del received
    dropped = time.monotonic()
    if EXPECT_REAPING:
        delay = wait_gone(names, dropped,
                          "the SIGKILLed child's tensors, after the parent dropped them")
        print(f"reaped {delay:.2f} s after the parent dropped them", flush=True)
    check_kept(keep)


SCENARIOS = {
    "child-killed": child_killed,
    "pool": pool,
    "dataloader": dataloader,
    "co-holder": co_holder,
    "child-killed-in-transit": child_killed_in_transit,
}


def main():
    scenario, method = sys.argv[1], sys.argv[2]
    note_pid()
    try:
        SCENARIOS[scenario](method)
    except Failure as failure:
        print(f"FAIL: {failure}", flush=True)
        sys.exit(1)
    except Exception as err:  # noqa: BLE001 -- reported as the scenario's failure
        traceback.print_exc()
        print(f"FAIL: unexpected {type(err).__name__}: {err}", flush=True)
        sys.exit(1)
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
