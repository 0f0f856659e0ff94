"""One rank of the reducer test (run by test_mpi_reducer.py under mpiexec -n 2).

Least squares on 8 samples, 4 per rank, iter_size 2 of batch 2, float64, one bucket
per parameter; writes the final weights, when each bucket's all-reduce started, and
whether bcast made rank 1's different start rank 0's. Mode ``hang``: rank 1 stalls
before iteration 3 and rank 0's watchdog (a 2 s timeout) must end the job. Mode
``gpu``: layer-wise in GPU mode on the fake device, with the host/device copies of
each step counted.
"""

import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import contextlib  # noqa: E402

import solver_nets as sn  # noqa: E402

import caffelite as caffe  # noqa: E402
from caffelite import backend, fake_device  # noqa: E402
from caffelite.parallel import mpi  # noqa: E402

out, mode = Path(sys.argv[1]), sys.argv[2]
layer_wise = mode in ("layer_wise", "gpu")
comm = mpi.join_world()
rank = comm.Get_rank()
if mode == "hang":  # the rank's last words, on stderr (through the launcher) and in a file
    for handler in (logging.StreamHandler(), logging.FileHandler(out / f"rank{rank}.log")):
        logging.getLogger("caffelite").addHandler(handler)
gpu_mode = backend.gpu_mode_on(fake_device) if mode == "gpu" else contextlib.nullcontext()
with backend.precision(np.float64), gpu_mode:
    x, y = sn.problem()
    x, y = np.concatenate([x, -x]), np.concatenate([y, 2 * y])  # 8 samples
    mine = slice(4 * rank, 4 * rank + 4)
    param = sn.solver_param("iter_size: 2 momentum: 0.9", batch_size=2)
    param.random_seed = 1701 + rank  # rank 1 starts elsewhere until rank 0's weights arrive
    solver = caffe.SGDSolver(param)
    sn.feed(solver, x[mine], y[mine])
    reducer = mpi.MPIGradientReducer(
        solver,
        comm,
        layer_wise=layer_wise,
        first_bucket_bytes=1,
        bucket_bytes=1,
        timeout=2.0 if mode == "hang" else mpi.DEFAULT_TIMEOUT,
    )
    if mode == "hang" and rank == 1:

        class Stall:
            def on_start(self):
                if solver.iter == 3:
                    time.sleep(120)  # alive but stuck: only the watchdog can end this

            def on_gradients_ready(self):
                pass

        solver.add_callback(Stall())
    started = []
    solver.net.after_backward(lambda layer_id: started.append((layer_id, reducer._started)))
    copies = []
    for _ in range(5):
        fake_device.reset_transfers()
        solver.step(1)
        copies.append((fake_device.transfers["h2d"], fake_device.transfers["d2h"]))
    weights, bias = sn.ip_params(solver)
    np.savez(
        out / f"rank{rank}.npz",
        weights=weights,
        bias=bias,
        started=np.array(started),
        buckets=len(reducer.buckets),
        copies=np.array(copies),
    )
