"""Rotations, cameras and projection shared by the body model, the networks and the losses.

Every function is batched over leading axes and safe under `jit`, `vmap` and `grad`
(including the singular points of the rotation conversions). The axis-angle conversions also
take `xp=numpy`, for host code (data loaders, renderers) that runs no JAX per example.
"""

import jax.numpy as jnp
import numpy as np

# AniMer renders a 256-pixel crop with a 1000-pixel focal length.
FOCAL_LENGTH = 1000.0
CROP_SIZE = 256


def _normalize(x, eps=1e-12):
    """torch.nn.functional.normalize: x / max(||x||, eps) along the last axis."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def rot6d_to_rotmat(x):
    """AniMer's 6D -> rotation matrix (Zhou et al. 2019). x: [..., 6] -> [..., 3, 3].

    The 6 numbers are two 3-vectors a1 = x[..., :3], a2 = x[..., 3:]; Gram-Schmidt gives
    the first two columns and their cross product the third.
    """
    a1, a2 = x[..., :3], x[..., 3:6]
    b1 = _normalize(a1)
    b2 = _normalize(a2 - jnp.sum(b1 * a2, axis=-1, keepdims=True) * b1)
    b3 = jnp.cross(b1, b2)
    return jnp.stack([b1, b2, b3], axis=-1)


def rotmat_to_rot6d(rotmat):
    """Inverse of `rot6d_to_rotmat` on rotations: the first two columns. [..., 3, 3] -> [..., 6]."""
    return jnp.concatenate([rotmat[..., :, 0], rotmat[..., :, 1]], axis=-1)


def _safe_norm(x, axis=-1, keepdims=False, xp=jnp):
    """Norm with a finite gradient at 0 (the gradient there is taken as 0)."""
    sq = xp.sum(x * x, axis=axis, keepdims=keepdims)
    nonzero = sq > 0
    return xp.where(nonzero, xp.sqrt(xp.where(nonzero, sq, 1.0)), 0.0)


def _skew(v, xp=jnp):
    """Cross-product matrix: _skew(v) @ u == cross(v, u). [..., 3] -> [..., 3, 3]."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = xp.zeros_like(x)
    return xp.stack([xp.stack([o, -z, y], -1),
                     xp.stack([z, o, -x], -1),
                     xp.stack([-y, x, o], -1)], -2)


def axis_angle_to_rotmat(aa, xp=jnp):
    """Rodrigues' formula. aa: [..., 3] (axis * angle in radians) -> [..., 3, 3].

    R = I + a K + b K^2 with K = skew(aa), a = sin t / t, b = (1 - cos t) / t^2. Near t = 0
    the coefficients switch to their Taylor series, so values and gradients stay exact.
    xp=numpy runs it on the host (data loaders, renderers: no JAX work per example).
    """
    aa = xp.asarray(aa)
    t2 = xp.sum(aa * aa, axis=-1)
    small = t2 < 1e-6
    t2_safe = xp.where(small, 1.0, t2)
    t = xp.sqrt(t2_safe)
    a = xp.where(small, 1.0 - t2 / 6.0 + t2 * t2 / 120.0, xp.sin(t) / t)
    b = xp.where(small, 0.5 - t2 / 24.0 + t2 * t2 / 720.0, (1.0 - xp.cos(t)) / t2_safe)
    k = _skew(aa, xp)
    eye = xp.eye(3, dtype=aa.dtype)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def rotmat_to_quaternion(rotmat, xp=jnp):
    """Rotation matrix -> unit quaternion (w, x, y, z) with w >= 0. [..., 3, 3] -> [..., 4].

    Shepperd's method: of the four algebraically equal formulas, use the one whose
    divisor is largest, so it is accurate everywhere including 180-degree rotations.
    """
    m = xp.asarray(rotmat)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Each row: 4 * (w, x, y, z) * component, with the component on the diagonal.
    candidates = xp.stack([
        xp.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
        xp.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
        xp.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
        xp.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
    ], -2)
    diag = xp.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                     1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = xp.argmax(diag, axis=-1)
    q = xp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    q = q / _safe_norm(q, keepdims=True, xp=xp).clip(1e-12)
    return xp.where(q[..., :1] < 0, -q, q)


def sign_continuous(q):
    """Quaternions [T, ..., 4] over time (NumPy), each one's sign flipped to lie nearest the one
    before: q and -q are one rotation, but averaging or interpolating needs one hemisphere."""
    q = np.array(q, copy=True)
    for t in range(1, len(q)):
        q[t] *= np.where(np.sum(q[t] * q[t - 1], axis=-1, keepdims=True) < 0, -1.0, 1.0)
    return q


def quaternion_to_axis_angle(q, xp=jnp):
    """Unit quaternion (w, x, y, z) -> axis-angle. [..., 4] -> [..., 3]. Angle in [0, pi] for w >= 0."""
    w, v = q[..., :1], q[..., 1:]
    s = _safe_norm(v, keepdims=True, xp=xp)
    angle = 2.0 * xp.arctan2(s, w)
    small = s < 1e-6
    # angle / s -> 2 / w as s -> 0 (w -> 1): the series keeps the gradient exact there.
    scale = xp.where(small, 2.0 / w * (1.0 - s * s / (3.0 * w * w)), angle / xp.where(small, 1.0, s))
    return v * scale


def rotmat_to_axis_angle(rotmat, xp=jnp):
    """Rotation matrix -> axis-angle, stable at 0 and near pi. [..., 3, 3] -> [..., 3]."""
    return quaternion_to_axis_angle(rotmat_to_quaternion(rotmat, xp), xp)


def weak_cam_to_translation(cam, focal_length=FOCAL_LENGTH, crop_size=CROP_SIZE):
    """Weak-perspective crop camera [s, tx, ty] -> camera translation [tx, ty, tz]. [..., 3] -> [..., 3].

    tz puts a unit-scale object at the depth where its projection spans `s` crop halves.
    """
    s, tx, ty = cam[..., 0], cam[..., 1], cam[..., 2]
    tz = 2.0 * focal_length / (crop_size * s + 1e-9)
    return jnp.stack([tx, ty, tz], axis=-1)


def perspective_projection(points, translation, focal_length, camera_center=None):
    """Pinhole projection of camera-frame points after a translation.

    points [..., N, 3], translation [..., 3], focal_length scalar or [..., 2],
    camera_center [..., 2] (default 0) -> [..., N, 2].
    """
    p = points + translation[..., None, :]
    xy = p[..., :2] / p[..., 2:3]
    focal = jnp.asarray(focal_length, dtype=points.dtype)
    if focal.ndim > 0:
        focal = focal[..., None, :]
    out = focal * xy
    if camera_center is not None:
        out = out + camera_center[..., None, :]
    return out


def project_to_crop(points, cam_t, focal_length=FOCAL_LENGTH, crop_size=CROP_SIZE):
    """AniMer's crop-normalised projection: coordinates in [-0.5, 0.5] over the crop.

    points [..., N, 3], cam_t [..., 3] -> [..., N, 2]; p = f/crop * (X + t)_xy / (X + t)_z.
    """
    return perspective_projection(points, cam_t, focal_length / crop_size)


def full_image_focal_length(image_size, focal_length=FOCAL_LENGTH, crop_size=CROP_SIZE):
    """AniMer's focal length for the full image: f / crop * max(W, H). image_size [..., 2] = (W, H)."""
    return focal_length / crop_size * jnp.max(image_size, axis=-1)


def cam_crop_to_full(cam, box_center, box_size, image_size, focal_length=None):
    """Crop camera [s, tx, ty] -> translation in the full image's camera frame.

    cam [..., 3], box_center [..., 2] (cx, cy) pixels, box_size [...] pixels,
    image_size [..., 2] (W, H) pixels, focal_length [...] (default AniMer's full-image focal).
    Returns [..., 3].
    """
    if focal_length is None:
        focal_length = full_image_focal_length(image_size)
    bs = box_size * cam[..., 0] + 1e-9
    tz = 2.0 * focal_length / bs
    tx = 2.0 * (box_center[..., 0] - image_size[..., 0] / 2.0) / bs + cam[..., 1]
    ty = 2.0 * (box_center[..., 1] - image_size[..., 1] / 2.0) / bs + cam[..., 2]
    return jnp.stack([tx, ty, tz], axis=-1)
