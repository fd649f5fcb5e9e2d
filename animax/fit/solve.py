"""The solver: SMAL parameters fitted to 2D evidence by Adam, one compiled scan per stage.

Shapes: A animals (or tracks) x T frames. Images are A animals of T = 1 frame each; a clip is
one track of T frames (its shape shared, temporal terms on); several tracks are A x T, frames a
track lacks marked invalid. The objective of one track (`track_loss`) is vmapped over A and the
per-track losses summed: Adam is elementwise, so the sum fits every track exactly as a fit of
its own would, in one batch.

Parameters (per track): betas [S, NB] (S = 1 when the shape is shared, else T), pose6d
[T, J, 6] (6D rotations, rotation-safe), cam [T, 3] = (tx / tz, ty / tz, log tz) of the
full-image camera translation (image-plane offset and log depth: equally conditioned).

One jitted function runs every stage: `chunk` Adam steps in a `lax.fori_loop` (no host round
trip per iteration), the gradients of the groups a stage keeps fixed masked to zero; a stage's
learning rate, weights and masks are traced arguments, so all stages share one compile. Matmuls run at
Precision.HIGHEST (an accelerator's TF32 would change results).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from tqdm import tqdm

from animax.fit import terms as T
from animax.fit.config import TORSO_JOINTS, FitConfig, FitStage
from animax.fit.priors import FitPriors
from animax.geometry import rot6d_to_rotmat, rotmat_to_axis_angle, rotmat_to_rot6d
from animax.smal.model import SMALModel, smal_forward

TERM_NAMES = ("keypoints", "silhouette_outside", "silhouette_cover", "pose_prior", "shape_prior", "joint_limits",
              "rotation_smoothness", "trajectory_smoothness")


@struct.dataclass
class Evidence:
    """What a fit is fitted to, [A, T, ...] (see animax.fit.evidence for building it).

    keypoints [A,T,K,2] pixels, confidence [A,T,K] (0 = missing), focal [A,T] pixels, center
    [A,T,2] principal point, scale [A,T] the animal's size in pixels, valid [A,T] (0 = no frame);
    distance [A,T,G,G] the mask's distance transform on a grid at origin [A,T,2] with cell [A,T]
    pixels, mask_points [A,T,P,2] and mask_weight [A,T,P] a subsample of mask pixels, has_mask [A,T].
    """
    keypoints: jax.Array
    confidence: jax.Array
    focal: jax.Array
    center: jax.Array
    scale: jax.Array
    valid: jax.Array
    distance: jax.Array
    origin: jax.Array
    cell: jax.Array
    mask_points: jax.Array
    mask_weight: jax.Array
    has_mask: jax.Array


def translation_of(cam):
    """cam [..., 3] = (tx / tz, ty / tz, log tz) -> camera translation [..., 3]."""
    depth = jnp.exp(cam[..., 2])
    return jnp.stack([cam[..., 0] * depth, cam[..., 1] * depth, depth], axis=-1)


def cam_of(translation):
    """Inverse of `translation_of` (NumPy or JAX). translation [..., 3] with tz > 0 -> [..., 3]."""
    translation = np.asarray(translation, np.float64)
    depth = np.maximum(translation[..., 2], 1e-6)
    return np.stack([translation[..., 0] / depth, translation[..., 1] / depth, np.log(depth)], axis=-1)


def posed(body: SMALModel, params):
    """One track's parameters -> (rotations [T,J,3,3], betas [T,NB], translation [T,3], body model
    outputs: vertices [T,V,3], joints [T,J,3], keypoints_3d [T,K,3])."""
    rotations = rot6d_to_rotmat(params["pose6d"])
    frames = rotations.shape[0]
    betas = jnp.broadcast_to(params["betas"], (frames, params["betas"].shape[-1]))
    return rotations, betas, translation_of(params["cam"]), smal_forward(body, betas, rotations)


def track_loss(params, ev: Evidence, body: SMALModel, priors: FitPriors, weights, config: FitConfig,
               active: tuple[str, ...]):
    """One track's objective: params (betas [S,NB], pose6d [T,J,6], cam [T,3]), evidence [T, ...],
    weights {term: []} -> (weighted total [], {term: value []}). Only the `active` terms (static)
    are computed. Frame terms are averaged over valid frames."""
    rotations, betas, translation, out = posed(body, params)
    valid = ev.valid
    frames = jnp.maximum(jnp.sum(valid), 1.0)
    values = {}
    if "keypoints" in active:
        points = T.project(out["keypoints_3d"], translation, ev.focal, ev.center)
        per_frame = jax.vmap(T.keypoint_term, in_axes=(0, 0, 0, 0, None))(
            points, ev.keypoints, ev.confidence, ev.scale, config.keypoint_sigma)
        values["keypoints"] = jnp.sum(valid * per_frame) / frames
    if "silhouette_outside" in active or "silhouette_cover" in active:
        vertices = T.project(out["vertices"][:, ::config.vertex_stride], translation, ev.focal, ev.center)
        with_mask = valid * ev.has_mask
        count = jnp.maximum(jnp.sum(with_mask), 1.0)
        if "silhouette_outside" in active:
            per_frame = jax.vmap(T.silhouette_outside_term)(vertices, ev.distance, ev.origin, ev.cell, ev.scale)
            values["silhouette_outside"] = jnp.sum(with_mask * per_frame) / count
        if "silhouette_cover" in active:
            per_frame = jax.vmap(T.silhouette_cover_term)(vertices, ev.mask_points, ev.mask_weight, ev.scale)
            values["silhouette_cover"] = jnp.sum(with_mask * per_frame) / count
    if "pose_prior" in active:
        values["pose_prior"] = T.pose_prior_term(priors.pose, rotations)
    if "shape_prior" in active:
        values["shape_prior"] = T.shape_prior_term(priors.shape, params["betas"])
    if "joint_limits" in active:
        values["joint_limits"] = T.joint_limit_term(rotmat_to_axis_angle(rotations[:, 1:]), priors.lower[1:],
                                                    priors.upper[1:])
    if "rotation_smoothness" in active:
        values["rotation_smoothness"] = T.rotation_smoothness_term(rotations, valid)
    if "trajectory_smoothness" in active:
        values["trajectory_smoothness"] = T.trajectory_smoothness_term(translation, valid)
    total = sum(weights[name] * value for name, value in values.items())
    return total, values


def free_mask(free, joint_names):
    """1 where a stage's free groups (animax.fit.config) let a parameter move, else 0 (a pytree
    like one track's params, leading axes broadcast)."""
    torso = np.array([n in TORSO_JOINTS for n in joint_names])
    joints = np.zeros(len(joint_names), np.float32)
    joints[0] = "global" in free
    joints[1:] = np.where(torso[1:], "torso" in free, "limbs" in free)
    return {"betas": jnp.float32("betas" in free), "pose6d": jnp.asarray(joints[:, None]),
            "cam": jnp.float32("transl" in free)}


def active_terms(config: FitConfig) -> tuple[str, ...]:
    """The terms some stage weighs (static: the rest are not even traced)."""
    return tuple(n for n in TERM_NAMES if any(getattr(s.weights, n) for s in config.stages))


def _objective(params, evidence, body, priors, weights, config, active):
    totals, values = jax.vmap(track_loss, in_axes=(0, 0, None, None, None, None, None))(
        params, evidence, body, priors, weights, config, active)
    return jnp.sum(totals), values


@functools.partial(jax.jit, static_argnames=("config", "active"), donate_argnums=(0, 1))
def _run_chunk(params, opt_state, evidence, body, priors, stage_values, steps, *, config: FitConfig,
               active: tuple[str, ...]):
    """`steps` (traced) Adam steps in a fori_loop; stage_values (traced, so that every stage and
    every chunk length share one compiled function): learning_rate [], weights {term: []}, mask
    (see free_mask). Returns (params, opt_state, loss [], terms {name: [A]})."""
    with jax.default_matmul_precision("highest"):
        optimizer = optax.adam(stage_values["learning_rate"])
        objective = functools.partial(_objective, evidence=evidence, body=body, priors=priors,
                                      weights=stage_values["weights"], config=config, active=active)

        def step(_, carry):
            p, state = carry
            grads = jax.grad(lambda q: objective(q)[0])(p)
            grads = jax.tree.map(lambda g, m: g * m, grads, stage_values["mask"])
            updates, state = optimizer.update(grads, state, p)
            return optax.apply_updates(p, updates), state

        params, opt_state = jax.lax.fori_loop(0, steps, step, (params, opt_state))
        loss, values = objective(params)
    return params, opt_state, loss, values


def stage_values(stage: FitStage, joint_names, active):
    """A stage's traced settings (see _run_chunk)."""
    return {"learning_rate": jnp.float32(stage.learning_rate),
            "weights": {n: jnp.float32(getattr(stage.weights, n)) for n in active},
            "mask": free_mask(stage.free, joint_names)}


def run_stages(params, evidence: Evidence, body: SMALModel, priors: FitPriors, config: FitConfig,
               progress: bool | None = None):
    """Runs config.stages in order. Returns (params, report): report is one dict per stage with its
    iterations, seconds, iterations/s and the final loss and terms (means over tracks)."""
    report = []
    active = active_terms(config)
    # The compiled function depends on the settings, not on the stages (traced): stages of any
    # length, rate or weights reuse it.
    settings = dataclasses.replace(config, stages=())
    total = sum(s.iterations for s in config.stages)
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    with tqdm(total=total, unit="it", desc="fit", disable=disable, file=sys.stderr) as bar:
        for stage in config.stages:
            values = stage_values(stage, body.joint_names, active)
            opt_state = optax.adam(values["learning_rate"]).init(params)
            start, done = time.perf_counter(), 0
            bar.set_description(f"fit: {stage.name}")
            while done < stage.iterations:
                steps = min(config.chunk, stage.iterations - done)
                params, opt_state, loss, terms = _run_chunk(params, opt_state, evidence, body, priors, values,
                                                            jnp.int32(steps), config=settings, active=active)
                done += steps
                bar.update(steps)
                bar.set_postfix(loss=f"{float(loss):.4g}")
            seconds = time.perf_counter() - start
            report.append({"stage": stage.name, "iterations": stage.iterations, "seconds": seconds,
                           "iterations_per_s": stage.iterations / max(seconds, 1e-9),
                           "learning_rate": stage.learning_rate, "free": list(stage.free),
                           "loss": float(loss) / evidence.valid.shape[0],
                           "terms": {k: float(jnp.mean(v)) for k, v in terms.items()},
                           "weights": dataclasses.asdict(stage.weights)})
    return params, report


def initial_params(betas, rotations, translation, shared_shape: bool):
    """Parameters from arrays [A, T, ...]: betas [A,T,NB], rotations [A,T,J,3,3], translation
    [A,T,3] (tz > 0). A shared shape starts at the median of the track's betas."""
    betas = np.asarray(betas, np.float32)
    if shared_shape:
        betas = np.median(betas, axis=1, keepdims=True)
    return {"betas": jnp.asarray(betas, jnp.float32),
            "pose6d": rotmat_to_rot6d(jnp.asarray(rotations, jnp.float32)),
            "cam": jnp.asarray(cam_of(translation), jnp.float32)}


@jax.jit
def _outputs(params, evidence: Evidence, body: SMALModel):
    with jax.default_matmul_precision("highest"):
        def one(p, ev):
            rotations, betas, translation, out = posed(body, p)
            return {"betas": betas, "pose": rotations, "cam_t_full": translation,
                    "vertices": out["vertices"], "joints": out["joints"], "keypoints3d": out["keypoints_3d"],
                    "keypoints2d": T.project(out["keypoints_3d"], translation, ev.focal, ev.center)}
        return jax.vmap(one)(params, evidence)


def outputs(params, evidence: Evidence, body: SMALModel) -> dict:
    """Fitted arrays [A, T, ...] (NumPy float32): betas, pose [..,J,3,3], cam_t_full, vertices,
    joints, keypoints3d (body-model frame, as the network's), keypoints2d (pixels), focal_length."""
    out = jax.device_get(_outputs(params, evidence, body))
    return {**{k: np.asarray(v, np.float32) for k, v in out.items()},
            "focal_length": np.asarray(evidence.focal, np.float32)}
