"""Jitted SMAL skinning (animax) vs smplx's `lbs` (PyTorch, CPU) on the same model, one run.

A random model of the released SMAL's size (3889 vertices, 35 joints, 41 betas) is posed at
batch 1 and 64. Prints a table and writes bench/results/bench_smal.json.

    python bench/bench_smal.py [--batches 1 64]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import torch
from common import report, time_call
from scipy.spatial.transform import Rotation
from smplx.lbs import lbs as smplx_lbs

from animax.smal import smal_forward
from animax.smal.constants import PARENTS
from animax.smal.io import smal_model_from_arrays

V, J, NB = 3889, len(PARENTS), 41


def random_model_arrays(seed=0):
    """Released-layout arrays; each vertex skinned to 4 joints (like SMAL's local weights)."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((V, J))
    for v in range(V):
        weights[v, rng.choice(J, 4, replace=False)] = rng.random(4)
    weights /= weights.sum(1, keepdims=True)
    regressor = rng.random((J, V)) * (rng.random((J, V)) < 0.01)
    regressor /= regressor.sum(1, keepdims=True)
    return dict(v_template=rng.normal(size=(V, 3)), shapedirs=rng.normal(size=(V, 3, NB)) * 0.1,
                posedirs=rng.normal(size=(V, 3, (J - 1) * 9)) * 0.01,
                J_regressor=scipy.sparse.csc_matrix(regressor), weights=weights,
                f=np.zeros((1, 3), np.int64), kintree_table=np.stack([np.array(PARENTS), np.arange(J)]))


def lbs_flops(batch):
    """Multiply-adds x 2 of the dense LBS terms (shape blend, pose blend, joints, skinning)."""
    per_sample = V * 3 * NB + V * 3 * (J - 1) * 9 + J * V * 3 + V * J * 12 + V * 12
    return 2 * batch * per_sample


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args()

    arrays = random_model_arrays()
    model = smal_model_from_arrays({**arrays, "keypoint_vertex_sets": [[0]]}, NB, "random")
    t_model = {k: torch.tensor(v, dtype=torch.float32) for k, v in dict(
        v_template=arrays["v_template"], shapedirs=arrays["shapedirs"],
        posedirs=arrays["posedirs"].reshape(-1, (J - 1) * 9).T,
        J_regressor=arrays["J_regressor"].toarray(), lbs_weights=arrays["weights"]).items()}
    t_parents = torch.tensor(PARENTS)

    rows = []
    for batch in args.batches:
        rng = np.random.default_rng(batch)
        betas = rng.normal(size=(batch, NB)).astype(np.float32)
        pose = Rotation.random(batch * J, random_state=batch).as_matrix().reshape(batch, J, 3, 3).astype(np.float32)
        j_betas, j_pose = jnp.asarray(betas), jnp.asarray(pose)
        tb, tp = torch.from_numpy(betas), torch.from_numpy(pose)

        def run_jax():
            jax.block_until_ready(smal_forward(model, j_betas, j_pose)["vertices"])

        def run_torch():
            with torch.inference_mode():
                smplx_lbs(tb, tp, t_model["v_template"], t_model["shapedirs"], t_model["posedirs"],
                          t_model["J_regressor"], t_parents, t_model["lbs_weights"], pose2rot=False)

        with torch.inference_mode():
            ref = smplx_lbs(tb, tp, t_model["v_template"], t_model["shapedirs"], t_model["posedirs"],
                            t_model["J_regressor"], t_parents, t_model["lbs_weights"], pose2rot=False)[0]
        ours = np.asarray(smal_forward(model, j_betas, j_pose)["vertices"])
        max_err = float(np.abs(ours - ref.numpy()).max())

        t_jax, t_torch = time_call(run_jax), time_call(run_torch)
        rows.append({"batch": batch, "animax_ms": 1e3 * t_jax, "smplx_ms": 1e3 * t_torch,
                     "speedup": t_torch / t_jax, "animax_gflops": lbs_flops(batch) / t_jax / 1e9,
                     "smplx_gflops": lbs_flops(batch) / t_torch / 1e9, "max_abs_diff": max_err})
    report("bench_smal", rows, ["batch", "animax_ms", "smplx_ms", "speedup", "animax_gflops",
                                "smplx_gflops", "max_abs_diff"])


if __name__ == "__main__":
    main()
