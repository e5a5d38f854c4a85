"""PyTorch's own client (THManagedMapAllocator) against whichever manager
torch runs: create a shared 4 KiB storage (register, wait for OK, create),
drop it (release). Prints the median microseconds per allocation over rounds.

    python alloc.py [size] [per_round] [rounds]
"""
import statistics
import sys
import time

import torch

size = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
per_round = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5


def one():
    storage = torch.UntypedStorage(size)
    storage._share_filename_cpu_()
    del storage


for _ in range(200):
    one()
medians = []
for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(per_round):
        one()
    medians.append((time.perf_counter() - start) / per_round * 1e6)
print(f"{statistics.median(medians):.2f}")
