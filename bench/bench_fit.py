"""animax.fit measured: accuracy on held-out synthetic renders and the walk clip, speed against the
same objective in PyTorch, and lifting a DeepLabCut file with no network.

    python bench/bench_fit.py --examples 256            # the real run
    python bench/bench_fit.py --examples 16 --skip-speed

Rows (case):
    synthetic_network        the shipped demo model alone (Predictor on the full render, scene's box)
    synthetic_fit_kp         fitted to the true 2D keypoints + N(0, 2 px), 15% dropped, from the network
    synthetic_fit_kp_mask    the same plus the true mask
    walk_network / walk_fit_frames / walk_fit_clip   the bundled walk clip (true tracks' keypoints
                             with the same noise): per-frame network, per-frame fit, whole-clip fit
    walk_lift_dlc            a DeepLabCut .h5 of the clip's true 2D keypoints lifted by animax-fit's path
    speed_*                  seconds per fit (all stages) and per iteration, animax (jit) vs torch (eager
                             Adam over smplx-style skinning, the same terms), batch 1 / 64 / 24-frame clip
PCK@0.1 is AniMer's (distance / sqrt(mask area)); PA-MPJPE and PA-MPVPE in mm (stand-in metres x 1000).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import report  # noqa: E402

from animax.data.scenes import SceneSampler, labels, render  # noqa: E402
from animax.fit import default_config, fit, from_predictions, standin_priors  # noqa: E402
from animax.fit.evidence import build_evidence  # noqa: E402
from animax.fit.solve import initial_params, run_stages  # noqa: E402
from animax.geometry import axis_angle_to_rotmat  # noqa: E402
from animax.loading import load_model_or_random  # noqa: E402
from animax.predict.predictor import Predictor  # noqa: E402
from animax.smal import smal_forward  # noqa: E402
from animax.track.smoothing import jitter  # noqa: E402
from animax.train import metrics  # noqa: E402

NOISE_PX, DROP = 2.0, 0.15


def noisy(keypoints, seed):
    """True keypoints [..., K, 3] with N(0, 2 px) noise and 15% of them dropped (NaN)."""
    rng = np.random.default_rng(seed)
    k = np.array(keypoints, np.float64)
    k[..., :2] += rng.normal(0.0, NOISE_PX, k[..., :2].shape)
    k[rng.random(k.shape[:-1]) < DROP] = np.nan
    return k


def scores(keypoints2d, keypoints3d, vertices, truth):
    """Per-example PCK@0.1, PA-MPJPE, PA-MPVPE against truth (arrays [N, ...])."""
    n = len(keypoints2d)
    ones = jnp.ones(n)
    gt2d = jnp.asarray(np.concatenate([truth["keypoints_2d"][..., :2] / 256.0, truth["keypoints_2d"][..., 2:]], -1),
                       jnp.float32)
    pck, _ = metrics.pck(jnp.asarray(keypoints2d / 256.0, jnp.float32), gt2d, jnp.asarray(truth["mask"]), ones, ones)
    gt3d = jnp.asarray(np.concatenate([truth["keypoints_3d"], np.ones(truth["keypoints_3d"].shape[:2] + (1,))], -1),
                       jnp.float32)
    mpjpe, _ = metrics.pa_mpjpe(jnp.asarray(keypoints3d, jnp.float32), gt3d, ones)
    mpvpe, _ = metrics.pa_mpvpe(jnp.asarray(vertices, jnp.float32), jnp.asarray(truth["vertices"], jnp.float32),
                                jnp.ones(vertices.shape[:2]), ones, ones)
    return {"pck@0.1": float(np.mean(pck)), "pa_mpjpe": float(np.mean(mpjpe)), "pa_mpvpe": float(np.mean(mpvpe))}


def synthetic(loaded, count, seed=0, max_yaw=np.radians(45.0)):
    body = loaded.body
    sampler = SceneSampler(body, seed=seed, max_yaw=max_yaw)
    predictor = Predictor(loaded.model, loaded.variables, batch_size=16)
    results, truth = [], {k: [] for k in ("keypoints_2d", "keypoints_3d", "vertices", "mask")}
    for i in range(count):
        scene = sampler.scene("test", i)
        posed = scene.posed_body(body)
        picture, mask = render(scene, body, posed=posed)
        found = labels(scene, posed, scene.camera)
        results.append(predictor.predict(np.round(255 * picture).astype(np.uint8), [scene.box])[0])
        rot = axis_angle_to_rotmat(found["pose"], xp=np).astype(np.float32)
        posed = smal_forward(body, np.asarray(scene.betas, np.float32)[None], rot[None])
        truth["vertices"].append(np.asarray(posed["vertices"][0]))
        truth["keypoints_2d"].append(found["keypoints_2d"])
        truth["keypoints_3d"].append(found["keypoints_3d"])
        truth["mask"].append(mask)
    truth = {k: np.stack(v) for k, v in truth.items()}
    rows = [{"case": "synthetic_network", "examples": count,
             **scores(np.stack([r["keypoints2d"] for r in results]), np.stack([r["keypoints3d"] for r in results]),
                      np.stack([r["vertices"] for r in results]), truth)}]
    keypoints = noisy(truth["keypoints_2d"], 1)
    keypoints[..., 2] = np.where(np.isnan(keypoints[..., 2]), np.nan, 1.0)
    keypoints[truth["keypoints_2d"][..., 2] == 0] = np.nan        # outside the picture: not labelled
    for case, masks in (("synthetic_fit_kp", None), ("synthetic_fit_kp_mask", [[m] for m in truth["mask"]])):
        start = time.perf_counter()
        result = fit(body, keypoints[:, None], (640, 480), masks=masks, start=from_predictions(results), progress=False)
        a = result.arrays
        rows.append({"case": case, "examples": count, "seconds": time.perf_counter() - start,
                     **scores(a["keypoints2d"][:, 0], a["keypoints3d"][:, 0], a["vertices"][:, 0], truth)})
    return rows


def walk(loaded):
    """The bundled clip: network per frame, per-frame fit, whole-clip fit, and lifting a DeepLabCut file."""
    from animax.fit.cli import main as fit_main
    from animax.track.export import write_deeplabcut
    from animax.track.sequence import TrackResult, track_sequence
    from examples.make_clip import FPS, render_clip

    body = loaded.body
    frames, (truth,) = render_clip(body=body)
    num = len(frames)
    predictor = Predictor(loaded.model, loaded.variables, batch_size=1)
    (track,), _ = track_sequence(predictor, iter(frames), num_frames=num, progress=False)
    rot = axis_angle_to_rotmat(truth["pose"], xp=np).astype(np.float32)
    true3d = np.asarray(smal_forward(body, np.zeros((num, body.num_betas), np.float32), rot)["keypoints_3d"])
    gt3d = jnp.asarray(np.concatenate([true3d, np.ones((num, 26, 1))], -1), jnp.float32)

    def row(case, keypoints2d, keypoints3d, **extra):
        mpjpe, _ = metrics.pa_mpjpe(jnp.asarray(keypoints3d, jnp.float32), gt3d, jnp.ones(num))
        err = np.linalg.norm(keypoints2d - truth["keypoints_2d"][..., :2], axis=-1).mean()
        return {"case": case, "examples": num, "pa_mpjpe": float(np.mean(mpjpe)), "jitter_px": jitter(keypoints2d),
                "jitter_3d_mm": jitter(np.asarray(keypoints3d) * 1000), "kp_error_px": float(err), **extra}

    a = track.arrays
    rows = [row("walk_truth", truth["keypoints_2d"][..., :2], true3d),
            row("walk_network", a["keypoints2d"], a["keypoints3d"])]
    keypoints = noisy(truth["keypoints_2d"], 2)
    keypoints[..., 2] = np.where(np.isnan(keypoints[..., 2]), np.nan, 1.0)
    start = from_predictions([{k: a[k][t] for k in ("betas", "pose", "cam_t_full")} for t in range(num)])
    t0 = time.perf_counter()
    per_frame = fit(body, keypoints[:, None], (320, 240), start=start, progress=False).arrays
    rows.append(row("walk_fit_frames", per_frame["keypoints2d"][:, 0], per_frame["keypoints3d"][:, 0],
                    seconds=time.perf_counter() - t0))
    from animax.fit.init import from_tracks
    t0 = time.perf_counter()
    clip = fit(body, keypoints[None], (320, 240), start=from_tracks([a]), clip=True, progress=False).arrays
    rows.append(row("walk_fit_clip", clip["keypoints2d"][0], clip["keypoints3d"][0], seconds=time.perf_counter() - t0))
    with tempfile.TemporaryDirectory() as tmp:
        dlc = TrackResult(0, np.arange(num), {"keypoints2d": truth["keypoints_2d"][..., :2].astype(np.float32)},
                          (320, 240))
        write_deeplabcut(Path(tmp) / "walk_DLC", dlc, num)
        t0 = time.perf_counter()
        fit_main([str(Path(tmp) / "walk_DLC.h5"), "--image-size", "320", "240", "--fps", str(FPS),
                  "--out", str(Path(tmp) / "out"), "--no-progress"])
        seconds = time.perf_counter() - t0
        lifted = np.load(Path(tmp) / "out" / "track_0.npz")
        rows.append(row("walk_lift_dlc", lifted["keypoints2d"], lifted["keypoints3d"], seconds=seconds))
    return rows


def torch_fit(body, evidence, params, config, priors):
    """The same objective (keypoints, pose and shape priors, joint limits) and stages as
    animax.fit, written in PyTorch the way SMALify does: an eager Adam loop over smplx-style
    skinning (its `batch_rigid_transform` chain, joint by joint). Returns seconds."""
    import torch
    def f(x):
        return torch.tensor(np.asarray(x), dtype=torch.float32)
    v_template, shapedirs = f(body.v_template), f(body.shapedirs)
    j_template, j_shapedirs = f(body.j_template), f(body.j_shapedirs)
    weights_lbs, kp_weight = f(body.lbs_weights), f(body.keypoint_weight)
    kp_index = torch.tensor(np.asarray(body.keypoint_index)).long()
    parents = body.parents
    kp, conf, focal, center, scale = (f(getattr(evidence, n))
                                      for n in ("keypoints", "confidence", "focal", "center", "scale"))
    pmean, pprec = f(priors.pose.mean), f(priors.pose.precision)
    smean, sprec = f(priors.shape.means[0]), f(priors.shape.precisions[0])
    lower, upper = f(priors.lower), f(priors.upper)
    A, T = kp.shape[:2]
    sigma = config.keypoint_sigma
    torso = torch.tensor([n in ("pelvis0", "spine", "spine0", "spine1", "spine2", "spine3") for n in body.joint_names])

    def rot6d(x):
        a1, a2 = x[..., :3], x[..., 3:]
        b1 = torch.nn.functional.normalize(a1, dim=-1)
        b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
        return torch.stack([b1, b2, torch.cross(b1, b2, dim=-1)], -1)

    def axis_angle(R):      # the log map (angles well inside (0, pi) here)
        cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1 + 1e-6, 1 - 1e-6)
        angle = torch.acos(cos)
        w = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
        return w * (angle / (2 * torch.sin(angle)))[..., None]

    def loss_fn(betas, pose6d, cam, w):
        R = rot6d(pose6d).reshape(A * T, -1, 3, 3)
        b = betas.expand(A, T, -1).reshape(A * T, -1)
        v = v_template + torch.einsum("bl,vcl->bvc", b, shapedirs)
        J = j_template + torch.einsum("bl,jcl->bjc", b, j_shapedirs)
        # smplx batch_rigid_transform: a loop over joints
        rel = J.clone()
        rel[:, 1:] = J[:, 1:] - J[:, list(parents[1:])]
        G = [torch.cat([torch.cat([R[:, 0], rel[:, 0, :, None]], -1),
                        torch.tensor([0, 0, 0, 1.0]).expand(A * T, 1, 4)], 1)]
        for j in range(1, len(parents)):
            local = torch.cat([torch.cat([R[:, j], rel[:, j, :, None]], -1),
                               torch.tensor([0, 0, 0, 1.0]).expand(A * T, 1, 4)], 1)
            G.append(G[parents[j]] @ local)
        G = torch.stack(G, 1)
        posed_j = G[:, :, :3, 3]
        offset = posed_j - torch.einsum("bjik,bjk->bji", G[:, :, :3, :3], J)
        Tm = torch.einsum("vj,bjik->bvik", weights_lbs, torch.cat([G[:, :, :3, :3], offset[..., None]], -1))
        verts = torch.einsum("bvik,bvk->bvi", Tm[..., :3], v) + Tm[..., 3]
        keys = (verts[:, kp_index] * kp_weight[None, :, :, None]).sum(2).reshape(A, T, -1, 3)
        depth = torch.exp(cam[..., 2])
        t = torch.stack([cam[..., 0] * depth, cam[..., 1] * depth, depth], -1)
        p = keys + t[..., None, :]
        proj = focal[..., None, None] * p[..., :2] / p[..., 2:].clamp(min=1e-3) + center[..., None, :]
        r = (proj - kp) / scale[..., None, None]
        g = sigma ** 2 * r ** 2 / (sigma ** 2 + r ** 2)
        l_kp = ((conf * g.sum(-1)).sum(-1) / conf.sum(-1).clamp(min=1e-6)).mean(-1)
        aa = axis_angle(R)
        z = (aa.reshape(A * T, -1) - pmean) @ pprec
        z[:, :3] = 0
        l_pose = (z ** 2).mean(-1).reshape(A, T).mean(-1)
        zs = (betas - smean) @ sprec
        l_shape = (zs ** 2).mean(-1).mean(-1)
        ex = (aa[:, 1:] - upper[1:]).clamp(min=0) + (lower[1:] - aa[:, 1:]).clamp(min=0)
        l_lim = (ex ** 2).sum((-1, -2)).reshape(A, T).mean(-1)
        return (w.keypoints * l_kp + w.pose_prior * l_pose + w.shape_prior * l_shape + w.joint_limits * l_lim).sum()

    tensors = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params.items()}
    start = time.perf_counter()
    for stage in config.stages:
        opt = torch.optim.Adam(list(tensors.values()), lr=stage.learning_rate)
        jmask = torch.where(torch.arange(len(parents)) == 0, float("global" in stage.free),
                            torch.where(torso, float("torso" in stage.free), float("limbs" in stage.free)))
        for _ in range(stage.iterations):
            opt.zero_grad()
            loss = loss_fn(tensors["betas"], tensors["pose6d"], tensors["cam"], stage.weights)
            loss.backward()
            tensors["pose6d"].grad *= jmask[:, None]
            tensors["betas"].grad *= float("betas" in stage.free)
            tensors["cam"].grad *= float("transl" in stage.free)
            opt.step()
    return time.perf_counter() - start


def speed(body, iterations_scale):
    """Seconds per fit of the same objective and iterations, animax vs torch, at batch 1 and 64 and a 24-frame clip."""
    priors = standin_priors(body)
    config = default_config().with_iterations(iterations_scale)
    iterations = sum(s.iterations for s in config.stages)
    sampler = SceneSampler(body, seed=3)
    rows = []
    for case, animals, frames in (("speed_batch1", 1, 1), ("speed_batch64", 64, 1), ("speed_clip24", 1, 24)):
        n = animals * frames
        scenes = [sampler.scene("test", i) for i in range(n)]
        kp = np.stack([labels(s, s.posed_body(body), s.camera)["keypoints_2d"] for s in scenes])
        kp = kp.reshape(animals, frames, 26, 3)
        evidence = build_evidence(noisy(kp, 4), (640, 480))
        rot = np.stack([axis_angle_to_rotmat(s.pose, xp=np) for s in scenes]).reshape(animals, frames, -1, 3, 3)
        trans = np.tile([0.0, 0.0, 12.0], (animals, frames, 1))
        clip_config = config if frames == 1 else default_config(clip=True).with_iterations(iterations_scale)
        params = initial_params(np.zeros((animals, frames, body.num_betas)), rot, trans, frames > 1)
        torch_params = jax.tree.map(lambda x: np.array(x), params)
        def copy():
            return jax.tree.map(jnp.array, torch_params)         # run_stages donates its params
        run_stages(copy(), evidence, body, priors, clip_config, progress=False)         # compile
        fresh = copy()
        t0 = time.perf_counter()
        done, _ = run_stages(fresh, evidence, body, priors, clip_config, progress=False)
        jax.block_until_ready(done)
        jax_s = time.perf_counter() - t0
        torch_s = torch_fit(body, evidence, torch_params, config, priors)
        rows.append({"case": case, "examples": n, "iterations": iterations, "animax_s": jax_s, "torch_s": torch_s,
                     "speedup": torch_s / jax_s, "animax_ms_per_it": 1000 * jax_s / iterations,
                     "torch_ms_per_it": 1000 * torch_s / iterations,
                     "note": "torch: keypoint+prior terms only" + (", no temporal terms" if frames > 1 else "")})
        print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--speed-iterations", type=float, default=0.2,
                        help="scale of the stages' iterations for the speed rows")
    args = parser.parse_args()
    loaded = load_model_or_random()
    rows = []
    if not args.speed_only:
        rows += synthetic(loaded, args.examples)
        rows += walk(loaded)
        for r in rows:
            print(r, flush=True)
    if not args.skip_speed:
        rows += speed(loaded.body, args.speed_iterations)
    columns = ["case", "examples", "pck@0.1", "pa_mpjpe", "pa_mpvpe", "jitter_px", "jitter_3d_mm", "kp_error_px",
               "seconds", "iterations", "animax_s", "torch_s", "speedup", "animax_ms_per_it", "torch_ms_per_it", "note"]
    report("bench_fit_speed" if args.speed_only else "bench_fit", rows, columns)


if __name__ == "__main__":
    main()
