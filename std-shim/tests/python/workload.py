"""What the PyTorch-side test scripts share: tensors through mp.Queue to a
worker and back, and the `pids=` line the Rust tests read.

The scripts run as `python <script>`, which puts this directory on sys.path;
spawned children inherit that path, so they import this module too.
"""
import os

import torch
import torch.multiprocessing as mp


def _echo_double(q_in, q_out):
    q_out.put(os.getpid())
    while True:
        t = q_in.get()
        if t is None:
            break
        q_out.put(t * 2)


def echo_round_trips(method, numel):
    """Starts a worker with the `method` start method, sends it 20 tensors of
    `numel` floats through a queue and checks each one it sends back doubled,
    then stops it. Returns the worker's pid."""
    ctx = mp.get_context(method)
    q_in, q_out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_echo_double, args=(q_in, q_out))
    p.start()
    pid = q_out.get()
    for k in range(20):
        t = torch.arange(numel, dtype=torch.float32) + k
        q_in.put(t)  # parent -> child
        assert torch.equal(q_out.get(), t * 2), (method, k)  # child -> parent
    q_in.put(None)
    p.join()
    assert p.exitcode == 0, (method, p.exitcode)
    return pid


def report_pids(pids):
    """Prints `pids=<pid,...>`: every process that may have created segments."""
    print("pids=" + ",".join(str(p) for p in sorted(set(pids))), flush=True)
