"""End to end under the file_system strategy: a forked worker sends tensors
of 4 KiB through an mp.Queue, the parent receives and drops them. Prints
tensors per second (the parent used the manager before forking, as
DataLoaders do).

    python queue_e2e.py [count] [size]
"""
import sys
import time

import torch
import torch.multiprocessing as mp

mp.set_sharing_strategy("file_system")
count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
size = int(sys.argv[2]) if len(sys.argv) > 2 else 4096


def produce(queue, count, size):
    for i in range(count):
        queue.put(torch.full((size // 4,), float(i)))
    queue.put(None)


def main():
    ctx = mp.get_context("fork")
    keep = torch.zeros(16)
    keep.share_memory_()  # the parent uses the manager before forking
    queue = ctx.Queue(maxsize=64)
    worker = ctx.Process(target=produce, args=(queue, count, size))
    start = time.perf_counter()
    worker.start()
    received = 0
    while True:
        tensor = queue.get()
        if tensor is None:
            break
        assert tensor[0] == received
        received += 1
        del tensor
    took = time.perf_counter() - start
    worker.join()
    assert received == count
    print(f"{count / took:.0f}")


if __name__ == "__main__":
    main()
