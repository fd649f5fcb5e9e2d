"""The class-token head is Linear/BatchNorm/ReLU with PyTorch's BatchNorm semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from animax.models.class_head import ClassTokenHead
from helpers.nn_reference import f32_tol, f64, random_params, rel_err
from helpers.torch_reference import to_flax_variables, torch_class_head_shapes

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32

EPS = 1e-5
# Float32 steps of the 16 -> 32 -> 32 -> 8 head: each Linear, then BatchNorm's batch mean and variance
# (sums over B = 6) in training or one elementwise step with the running statistics in evaluation.
TRAIN_STEPS = (16, 6, 6, 1, 32, 6, 6, 1, 32, 6, 6, 1)
EVAL_STEPS = (16, 1, 32, 1, 32, 1)


def np_head(params, stats, x, train):
    """float64 NumPy forward; returns (output, new running stats) with flax's update rule."""
    new_stats = {}
    for i in (0, 3, 6):
        x = x @ params[f"layers_{i}"]["kernel"]
        bn = f"layers_{i + 1}"
        if train:
            mean, var = x.mean(0), x.var(0)  # biased variance, as torch normalises in training
            new_stats[bn] = {"mean": 0.9 * stats[bn]["mean"] + 0.1 * mean, "var": 0.9 * stats[bn]["var"] + 0.1 * var}
        else:
            mean, var = stats[bn]["mean"], stats[bn]["var"]
        x = (x - mean) / np.sqrt(var + EPS)
        if i < 6:
            x = np.maximum(x * params[bn]["scale"] + params[bn]["bias"], 0.0)
    return x, new_stats


def random_variables(head, x):
    """Random params and running stats (positive variances), without running the init."""
    rng = np.random.default_rng(0)
    stats = jax.eval_shape(head.init, jax.random.key(0), x)["batch_stats"]
    stats = {name: {"mean": rng.normal(0.0, 0.1, s["mean"].shape).astype(np.float32),
                    "var": rng.uniform(0.5, 1.5, s["var"].shape).astype(np.float32)} for name, s in stats.items()}
    return {"params": random_params(head, x), "batch_stats": stats}


def test_full_size_layout():
    head = ClassTokenHead()
    variables = jax.eval_shape(head.init, jax.random.key(0), jax.ShapeDtypeStruct((4, 1280), jnp.float32))
    assert jax.tree.map(np.shape, variables) == {
        "params": {"layers_0": {"kernel": (1280, 4096)}, "layers_1": {"scale": (4096,), "bias": (4096,)},
                   "layers_3": {"kernel": (4096, 4096)}, "layers_4": {"scale": (4096,), "bias": (4096,)},
                   "layers_6": {"kernel": (4096, 256)}},
        "batch_stats": {"layers_1": {"mean": (4096,), "var": (4096,)}, "layers_4": {"mean": (4096,), "var": (4096,)},
                        "layers_7": {"mean": (256,), "var": (256,)}}}
    torch_shapes = {k: np.broadcast_to(np.float32(0), s) for k, s in torch_class_head_shapes(1280, 4096, 256).items()}
    converted = to_flax_variables(torch_shapes, "class_token_head.head.")  # through animax.convert.keymap
    assert jax.tree.map(np.shape, converted) == jax.tree.map(np.shape, variables)


def test_train_uses_batch_stats_and_updates_running_stats():
    head = ClassTokenHead(hidden_dim=32, output_dim=8)
    x = np.random.default_rng(1).normal(size=(6, 16)).astype(np.float32)
    variables = random_variables(head, x)
    out, updates = head.apply(variables, x, train=True, mutable=["batch_stats"])
    ref, ref_stats = np_head(f64(variables["params"]), f64(variables["batch_stats"]), np.asarray(x, np.float64), True)
    assert rel_err(out, ref) < f32_tol(*TRAIN_STEPS)
    assert max(jax.tree.leaves(jax.tree.map(rel_err, updates["batch_stats"], ref_stats))) < f32_tol(*TRAIN_STEPS)


def test_eval_uses_running_stats():
    head = ClassTokenHead(hidden_dim=32, output_dim=8)
    x = np.random.default_rng(1).normal(size=(6, 16)).astype(np.float32)
    variables = random_variables(head, x)
    ref, _ = np_head(f64(variables["params"]), f64(variables["batch_stats"]), np.asarray(x, np.float64), False)
    assert rel_err(head.apply(variables, x), ref) < f32_tol(*EVAL_STEPS)
    # One sample at a time gives the same rows: nothing depends on the batch. Not bitwise: XLA
    # picks other matmul kernels for 1 row than for 6 (and per CPU), so the two float32 results
    # differ by rounding, relative to the rows' scale (an output element can be near 0).
    assert rel_err(head.apply(variables, x[:1]), head.apply(variables, x)[:1]) < f32_tol(*EVAL_STEPS, sides=2)


def test_matches_torch_sequential_with_converted_names():
    g = torch.Generator().manual_seed(0)
    torch_head = torch.nn.Sequential(
        torch.nn.Linear(16, 32, bias=False), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
        torch.nn.Linear(32, 32, bias=False), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
        torch.nn.Linear(32, 8, bias=False), torch.nn.BatchNorm1d(8, affine=False))
    with torch.no_grad():
        for name, t in torch_head.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(0.2 * torch.randn(t.shape, generator=g) + (name in ("1.weight", "4.weight")))
    # AniMer's key table; it copies the tensors, which torch's training forward updates in place.
    variables = to_flax_variables(torch_head.state_dict(), "class_token_head.head.")
    head = ClassTokenHead(hidden_dim=32, output_dim=8)
    x = torch.randn(6, 16, generator=g)
    with torch.no_grad():
        expected_eval = torch_head.eval()(x).numpy()
        expected_train = torch_head.train()(x).numpy()
    assert rel_err(head.apply(variables, jnp.asarray(x.numpy())), expected_eval) < f32_tol(*EVAL_STEPS, sides=2)
    out, updates = head.apply(variables, jnp.asarray(x.numpy()), train=True, mutable=["batch_stats"])
    assert rel_err(out, expected_train) < f32_tol(*TRAIN_STEPS, sides=2)
    # Running means follow torch; running variances differ by torch's unbiased B / (B - 1) factor.
    assert rel_err(updates["batch_stats"]["layers_7"]["mean"], torch_head[7].running_mean.numpy()) < f32_tol(
        *TRAIN_STEPS, sides=2)
