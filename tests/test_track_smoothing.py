"""Track smoothing: rotation-safe, lowers jitter and keeps the motion."""

import numpy as np
from scipy.spatial.transform import Rotation

from animax.track.smoothing import smooth_parameters


def _angles(rotations):
    return Rotation.from_matrix(rotations.reshape(-1, 3, 3)).as_rotvec().reshape(*rotations.shape[:-2], 3)


def test_smoothing_lowers_jitter_and_keeps_the_motion():
    frames, rng = 60, np.random.default_rng(1)
    truth = Rotation.from_rotvec(np.outer(np.linspace(0, 2.5, frames), [0.0, 0.0, 1.0]))   # turning 2.5 rad
    noise = Rotation.from_rotvec(rng.normal(0.0, 0.05, (frames, 3)))
    rotations = (noise * truth).as_matrix()[:, None].repeat(2, axis=1)            # two joints, same track
    cam = np.stack([np.full(frames, 0.9), np.linspace(-0.2, 0.2, frames), np.zeros(frames)], -1)
    cam_noisy = cam + rng.normal(0.0, 0.01, cam.shape)
    betas = rng.normal(0.0, 0.1, (frames, 5)) + np.arange(5)
    smooth_rotations, smooth_cam, smooth_betas = smooth_parameters(rotations, cam_noisy, betas, sigma_frames=2.0)

    def jitter(r):      # mean angular acceleration: |log(R[t+1] R[t]^T) - log(R[t] R[t-1]^T)|
        steps = Rotation.from_matrix(r[1:]) * Rotation.from_matrix(r[:-1]).inv()
        return np.mean(np.linalg.norm(np.diff(steps.as_rotvec(), axis=0), axis=-1))

    assert jitter(smooth_rotations[:, 0]) < 0.3 * jitter(rotations[:, 0])
    error = (Rotation.from_matrix(smooth_rotations[5:-5, 0]) * truth[5:-5].inv()).magnitude()
    assert error.max() < 0.05                        # the turn survives (noise 0.05 rad per axis)
    assert np.abs(smooth_cam - cam).mean() < 0.5 * np.abs(cam_noisy - cam).mean()
    np.testing.assert_allclose(smooth_betas, np.broadcast_to(np.median(betas, 0), betas.shape), rtol=1e-6)
    unsmoothed, _, _ = smooth_parameters(rotations, cam_noisy, betas, sigma_frames=0)
    np.testing.assert_allclose(unsmoothed, rotations, atol=1e-5)   # float32 round trip through quaternions
    # A rotation through 180 degrees (where quaternion signs flip) is averaged, not torn apart.
    flip = Rotation.from_rotvec(np.outer(np.linspace(2.8, 3.5, 20), [1.0, 0, 0])).as_matrix()[:, None]
    smoothed_flip = smooth_parameters(flip, np.zeros((20, 3)), np.zeros((20, 1)))[0]
    assert (Rotation.from_matrix(smoothed_flip[2:-2, 0]) * Rotation.from_matrix(flip[2:-2, 0]).inv()
            ).magnitude().max() < 0.02
