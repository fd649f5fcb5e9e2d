"""Stand-in scenes: the one sampler and renderer of animax's synthetic data.

A scene is the body model standing on a ground plane under a sky, photographed by a camera
a few body lengths away, as `examples/make_example.py` draws the bundled example (which is
one fixed scene): a shaded mesh from `animax.image.raster`, sky and grass shaded per pixel
by casting each pixel's ray at the ground plane, a soft checker for depth, a contact
shadow under the body. `SceneSampler.scene(split, index)` draws one at random, a pure
function of (seed, split, index):

- body: a family (its mean shape + noise over the first ten shape directions), a pose near
  the SMAL pose prior when one is given, else a walk (`walking_pose` at a random stride
  and sign) plus per-part random rotations (`joint_sigmas`); any heading, or within `max_yaw`
  of side-on (facing left or right, as the bundled example);
- camera: elevation 0-25 degrees, roll of a few degrees, a distance at which the animal
  spans 25-75% of a 640 x 480 picture (AniMer's full-image focal length), anywhere in it;
- look: fur colour from a palette of coats with optional patches, light direction and
  ambient level, sky and ground colours (grass, dry grass, earth, sand, snow), checker
  contrast and size, haze distance, shadow strength, sensor noise;
- box: what a detector gives: the animal's box, its sides jittered, grown 0-100% (up to a
  whole-picture framing, as `infer.py` uses without boxes), and in 15% of scenes cut on
  one side as if part of the animal were hidden.

Two framings of one scene, with the same labels:
- `render_image(scene)`: the whole picture (the TFDS builder stores it with its box; the
  loader then crops it like any dataset);
- `render_crop(scene)`: the network input of the scene's box, rendered directly through the
  crop's camera (the picture cropped by `animax.image.crop`, its zero border where the box
  reaches past the picture, without drawing what lies outside the box): the in-memory
  training source.
Labels: 2D keypoints, 3D keypoints in the camera's orientation, betas, pose (joint 0 in the
camera frame), the translation that places the posed body model in the camera frame, mask.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from animax.geometry import CROP_SIZE, axis_angle_to_rotmat, full_image_focal_length, rotmat_to_axis_angle
from animax.image.crop import apply_affine, crop_transform, normalize, square_box
from animax.image.raster import AMBIENT, LIGHT_DIRECTION, project, rasterize, shade
from animax.smal import SMALModel, smal_forward
from animax.smal.standin import walking_pose

NUM_FAMILIES = 5
# The families' mean shapes are part of the world, not of a sample: every seed shares them.
FAMILY_SEED = 2**31 - 1
SPLITS = {"train": 0, "test": 1}
IMAGE_SIZE = (640, 480)            # (W, H) of the pictures, as the bundled example

# Coats (RGB 0..1): bay, chestnut, dark brown, black, grey, white, tan, ginger, dun.
FUR_PALETTE = np.array([[0.62, 0.44, 0.30], [0.55, 0.30, 0.16], [0.30, 0.20, 0.13], [0.08, 0.07, 0.07],
                        [0.50, 0.50, 0.50], [0.88, 0.86, 0.82], [0.80, 0.65, 0.45], [0.80, 0.45, 0.20],
                        [0.70, 0.62, 0.48]])
# Grounds (near colour, far colour): grass, dry grass, earth, sand, snow.
GROUND_PALETTE = np.array([[[0.30, 0.45, 0.20], [0.55, 0.62, 0.45]], [[0.55, 0.50, 0.28], [0.70, 0.68, 0.52]],
                           [[0.40, 0.30, 0.22], [0.58, 0.52, 0.45]], [[0.76, 0.68, 0.50], [0.82, 0.78, 0.66]],
                           [[0.85, 0.87, 0.90], [0.80, 0.83, 0.88]]])
# Skies (top colour, horizon colour): clear, pale, overcast, evening.
SKY_PALETTE = np.array([[[0.35, 0.55, 0.85], [0.80, 0.88, 0.95]], [[0.55, 0.70, 0.90], [0.88, 0.92, 0.96]],
                        [[0.60, 0.62, 0.66], [0.82, 0.83, 0.85]], [[0.30, 0.40, 0.65], [0.95, 0.75, 0.55]]])


@dataclasses.dataclass(frozen=True)
class Camera:
    """A pinhole camera in the world (x, y ground plane, z up): `rotation` rows are its right,
    down and forward axes; pixel centres at integer coordinates."""
    position: np.ndarray            # [3]
    rotation: np.ndarray            # [3, 3] world -> camera
    focal: float
    principal_point: tuple[float, float]
    width: int
    height: int

    def to_camera(self, points):
        """World points [N, 3] -> camera frame."""
        return (np.asarray(points, np.float64) - self.position) @ self.rotation.T

    def pixels(self, points):
        """World points [N, 3] -> pixel x, y [N, 2]."""
        return project(self.to_camera(points), self.focal, self.principal_point)[:, :2]

    def through_box(self, center, size, out_size=CROP_SIZE) -> "Camera":
        """The camera of the square box (center, size) resampled to out_size x out_size pixels:
        crop pixel = (pixel - center) * out_size / size + out_size / 2 (`crop_transform`)."""
        k = out_size / size
        principal = tuple((np.asarray(self.principal_point) - center) * k + out_size / 2.0)
        return dataclasses.replace(self, focal=self.focal * k, principal_point=principal,
                                   width=out_size, height=out_size)


@dataclasses.dataclass(frozen=True)
class Look:
    """Everything about the picture that is not geometry (colours RGB in 0..1)."""
    fur: tuple                      # RGB of the coat
    patches: float = 0.0            # strength of the coat's darker patches (0 = plain)
    patch_waves: tuple = ((0.0,) * 3,) * 3   # [3, 3] spatial frequencies of the patches
    light: tuple = tuple(LIGHT_DIRECTION)    # towards the light, camera frame
    ambient: float = AMBIENT
    sky_top: tuple = tuple(SKY_PALETTE[0, 0])
    sky_horizon: tuple = tuple(SKY_PALETTE[0, 1])
    ground_near: tuple = tuple(GROUND_PALETTE[0, 0])
    ground_far: tuple = tuple(GROUND_PALETTE[0, 1])
    checker: float = 0.03           # contrast of the ground's checker, fading with distance
    checker_size: float = 2.0       # metres
    haze: float = 40.0              # metres over which the ground fades to its far colour
    shadow: float = 0.45            # darkening right under the body
    shadow_axes: tuple = (0.9, 0.35)   # metres along and across the body
    noise: float = 0.0              # sensor noise (std, 0..1 scale)


@dataclasses.dataclass(frozen=True)
class Scene:
    """One scene: the body (world placement), the camera, the look and the detector box."""
    betas: np.ndarray               # [NB]
    pose: np.ndarray                # [J, 3] axis-angle; joint 0 = the body's orientation in the world
    offset: np.ndarray              # [3] world position of the body model's origin
    camera: Camera
    look: Look
    box: np.ndarray                 # [4] x1, y1, x2, y2 in pixels of the picture
    family: int = -1
    seed: int = 0                   # of the sensor noise
    posed: "Posed | None" = dataclasses.field(default=None, compare=False, repr=False)  # cached `pose_body`

    def posed_body(self, body: SMALModel) -> "Posed":
        return self.posed or pose_body(body, self.betas, self.pose, self.offset)


def joint_sigmas(joint_names) -> np.ndarray:
    """Spread [J, 3] (radians, about the body's x forward, y left, z up axes) of each joint's
    random local rotation, by the joint's part of the body: a stiff spine, legs that swing
    fore and aft, a wagging tail, a loose neck, head, jaw and ears. Independent rotations of
    the same size everywhere would bend the body through its six spine joints by about 50
    degrees, a contortion no animal makes.
    """
    def spread(name):
        name = name.lower()
        if "spine" in name or "pelvis" in name:
            return (0.04, 0.04, 0.04)
        if "leg" in name or "foot" in name:
            return (0.05, 0.3, 0.05)
        if "tail" in name:
            return (0.05, 0.15, 0.15)
        return (0.15, 0.15, 0.15)
    return np.array([spread(n) for n in joint_names])


def look_at(position, target, roll=0.0) -> np.ndarray:
    """Rows right, down, forward of a camera at `position` looking at `target` (z up), turned
    by `roll` radians about its forward axis."""
    forward = (target - position) / np.linalg.norm(target - position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = np.cos(roll), np.sin(roll)
    return np.stack([c * right + s * down, c * down - s * right, forward])


@dataclasses.dataclass
class Posed:
    """The scene's body: model-frame output of the body model and its world placement."""
    vertices: np.ndarray            # [V, 3] world
    keypoints: np.ndarray           # [K, 3] world
    root: np.ndarray                # [3] model-frame root joint (the centre of joint 0's rotation)


def pose_body(body: SMALModel, betas, pose, offset) -> Posed:
    """The body model posed (joint 0 = world orientation) and moved by `offset`."""
    out = smal_forward(body, np.asarray(betas, np.float32)[None],
                       axis_angle_to_rotmat(np.asarray(pose, np.float64), xp=np)[None].astype(np.float32))
    offset = np.asarray(offset, np.float64)
    return Posed(np.asarray(out["vertices"][0], np.float64) + offset,
                 np.asarray(out["keypoints_3d"][0], np.float64) + offset, np.asarray(out["joints"][0, 0], np.float64))


def render(scene: Scene, body: SMALModel, camera: Camera | None = None, posed: Posed | None = None):
    """(RGB float [H, W, 3] in 0..1, mask bool [H, W]) of the scene seen by `camera`
    (default: the scene's own)."""
    camera = camera or scene.camera
    posed = posed or scene.posed_body(body)
    look = scene.look
    faces = np.asarray(body.faces)
    vertices = camera.to_camera(posed.vertices)
    raster = rasterize(project(vertices, camera.focal, camera.principal_point), faces, camera.height, camera.width)
    colour = np.asarray(look.fur, np.float64)
    if look.patches:
        rest = np.asarray(body.v_template, np.float64)
        patches = 0.5 + 0.5 * np.sin(rest @ np.asarray(look.patch_waves)).mean(-1)
        colour = colour * (1.0 - look.patches * patches[:, None])
    animal = shade(raster, vertices, faces, colour, light=look.light, ambient=look.ambient)
    ground_z = posed.vertices[:, 2].min()
    picture = np.where(raster.mask[..., None], animal, _background(scene, camera, ground_z))
    if look.noise:
        picture = picture + np.random.default_rng(scene.seed).normal(0.0, look.noise, picture.shape)
    return np.clip(picture, 0.0, 1.0), raster.mask


def _background(scene: Scene, camera: Camera, ground_z) -> np.ndarray:
    """Sky above the horizon, the ground plane z = ground_z below it. [H, W, 3]."""
    look = scene.look
    near, far, horizon, top = (np.asarray(c, np.float64) for c in (look.ground_near, look.ground_far,
                                                                   look.sky_horizon, look.sky_top))
    rows, cols = np.mgrid[0:camera.height, 0:camera.width].astype(np.float64)
    px, py = camera.principal_point
    rays = np.stack([(cols - px) / camera.focal, (rows - py) / camera.focal, np.ones_like(rows)], -1)
    rays = rays @ camera.rotation                                # world directions
    down = rays[..., 2] < -1e-6
    distance = np.where(down, (ground_z - camera.position[2]) / np.where(down, rays[..., 2], -1.0), 0.0)
    hit = camera.position + distance[..., None] * rays
    fade = np.clip(distance / look.haze, 0.0, 1.0)[..., None]
    squares = np.floor(hit[..., 0] / look.checker_size) + np.floor(hit[..., 1] / look.checker_size)
    ground = (1 - fade) * near + fade * far + (squares % 2)[..., None] * look.checker * (1 - fade)
    # Contact shadow: darker ground close under the body, an ellipse along its heading.
    heading = axis_angle_to_rotmat(np.asarray(scene.pose[0], np.float64), xp=np)[:, 0]
    along = np.array([heading[0], heading[1]]) / max(np.hypot(heading[0], heading[1]), 1e-9)
    dx, dy = hit[..., 0] - scene.offset[0], hit[..., 1] - scene.offset[1]
    u, v = dx * along[0] + dy * along[1], dy * along[0] - dx * along[1]
    a, b = look.shadow_axes
    ground = ground * (1.0 - look.shadow * np.exp(-((u / a) ** 2 + (v / b) ** 2)))[..., None]
    height = np.clip(rays[..., 2] / 0.5, 0.0, 1.0)[..., None]
    sky = (1 - height) * horizon + height * top
    return np.where(down[..., None], ground, sky)


def labels(scene: Scene, posed: Posed, camera: Camera) -> dict:
    """Exact labels of the scene in `camera`'s frame and pixels.

    keypoints_2d [K, 3] pixels + 1 where the keypoint falls inside the picture (else 0);
    keypoints_3d [K, 3] the posed body in the camera's orientation, untranslated (what the
    body model gives for `pose`); pose [J, 3] with joint 0 in the camera frame; trans [3]:
    body model output + trans = camera-frame points.
    """
    rotation = camera.rotation
    root_world = axis_angle_to_rotmat(np.asarray(scene.pose[0], np.float64), xp=np)
    pose = np.array(scene.pose, np.float64)
    pose[0] = rotmat_to_axis_angle(rotation @ root_world, xp=np)
    # The body model turns joint 0 about the root joint r: camera-frame body model output
    # = R (world - offset - r) + r, and the camera sees R (world - position).
    keypoints_3d = (posed.keypoints - scene.offset - posed.root) @ rotation.T + posed.root
    trans = rotation @ (scene.offset + posed.root - camera.position) - posed.root
    xy = camera.pixels(posed.keypoints)
    inside = np.all((xy >= -0.5) & (xy <= np.array([camera.width, camera.height]) - 0.5), axis=-1)
    return {"keypoints_2d": np.concatenate([xy, inside[:, None]], -1), "keypoints_3d": keypoints_3d,
            "pose": pose, "trans": trans}


def render_image(scene: Scene, body: SMALModel):
    """The whole picture: (uint8 RGB [H, W, 3], mask bool [H, W], labels (see `labels`))."""
    posed = scene.posed_body(body)
    picture, mask = render(scene, body, posed=posed)
    return np.round(255 * picture).astype(np.uint8), mask, labels(scene, posed, scene.camera)


def picture_coverage(src_from_dst, out_size, picture: Camera) -> np.ndarray:
    """[S, S] share of each crop pixel that the picture covers, as the crop's bilinear warp with
    a zero border weighs it (1 inside, falling linearly to 0 over the pixel past each edge)."""
    grid = np.stack(np.meshgrid(np.arange(out_size), np.arange(out_size)), -1).astype(np.float64)
    source = apply_affine(src_from_dst, grid)
    limits = np.array([picture.width, picture.height])
    return np.prod(np.clip(np.minimum(source + 1.0, limits - source), 0.0, 1.0), axis=-1)


def render_crop(scene: Scene, body: SMALModel, out_size=CROP_SIZE) -> dict:
    """The network input of the scene's box, with the training batch's fields (one example):
    image [S, S, 3] ImageNet-normalised, mask [S, S] float32, keypoints_2d [K, 3]
    crop-normalised (x / S - 0.5) + visibility in the crop, keypoints_3d [K, 4], pose [J, 3, 3].
    """
    center, size = square_box(scene.box)
    camera = scene.camera.through_box(center, size, out_size)
    posed = scene.posed_body(body)
    picture, mask = render(scene, body, camera, posed)
    # Where the box reaches past the photograph, the crop has its zero border (a whole-picture
    # box of a 4:3 photo is a quarter border): black here too, or the network never sees it.
    coverage = picture_coverage(crop_transform(center, size, out_size), out_size, scene.camera)
    picture, mask = picture * coverage[..., None], mask & (coverage > 0.5)
    # As the photograph would be stored (8 bits) and cropped.
    image = normalize(np.round(255 * picture).astype(np.float32))
    found = labels(scene, posed, camera)
    keypoints_2d = found["keypoints_2d"].copy()
    in_picture = labels(scene, posed, scene.camera)["keypoints_2d"][:, 2]
    keypoints_2d[:, 2] *= in_picture
    keypoints_2d[:, :2] = keypoints_2d[:, :2] / out_size - 0.5
    return {"image": image, "mask": mask.astype(np.float32), "keypoints_2d": keypoints_2d.astype(np.float32),
            "keypoints_3d": np.concatenate([found["keypoints_3d"], np.ones((len(keypoints_2d), 1))], -1
                                           ).astype(np.float32),
            "pose": axis_angle_to_rotmat(found["pose"], xp=np).astype(np.float32),
            "betas": np.asarray(scene.betas, np.float32)}


class SceneSampler:
    """Random scenes of one body model; see the module docstring."""

    def __init__(self, body: SMALModel, seed: int = 0, pose_prior: dict | None = None,
                 image_size: tuple[int, int] = IMAGE_SIZE, max_yaw: float = np.pi):
        """pose_prior: {"mean": [J, 3], "factor": [3J, 3J] Cholesky factor of its covariance};
        max_yaw: radians from side-on the heading may turn (pi/2 or more: any heading)."""
        self.body, self.seed, self.image_size, self.max_yaw = body, seed, image_size, max_yaw
        self.pose_prior = pose_prior
        family_rng = np.random.default_rng(FAMILY_SEED)
        self.family_betas = np.zeros((NUM_FAMILIES, body.num_betas))
        self.family_betas[:, :10] = family_rng.normal(0.0, 0.8, (NUM_FAMILIES, 10))
        self.joint_sigmas = joint_sigmas(body.joint_names)
        self.walk = walking_pose(body.num_joints).astype(np.float64)

    def scene(self, split: str, index: int) -> Scene:
        rng = np.random.default_rng([self.seed, SPLITS[split], index])
        family = int(rng.integers(NUM_FAMILIES))
        betas = self.family_betas[family] + rng.normal(0.0, 0.3, self.body.num_betas) * (
            np.arange(self.body.num_betas) < 10)
        pose = self._pose(rng)
        posed = pose_body(self.body, betas, pose, np.zeros(3))
        # Feet on the ground plane z = 0 under the world origin.
        low, high = posed.vertices.min(0), posed.vertices.max(0)
        offset = -np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])
        camera = self._camera(rng, posed.vertices + offset)
        look = self._look(rng, high - low)
        posed = Posed(posed.vertices + offset, posed.keypoints + offset, posed.root)
        box = self._box(rng, camera.pixels(posed.vertices))
        return Scene(betas, pose, offset, camera, look, box, family, seed=int(rng.integers(2**31)), posed=posed)

    def _pose(self, rng) -> np.ndarray:
        """[J, 3] axis-angle; joint 0 = a random heading about the world's up axis."""
        num_joints = self.body.num_joints
        if self.pose_prior is not None:
            z = np.clip(rng.standard_normal(3 * num_joints), -2.0, 2.0)
            pose = self.pose_prior["mean"] + (self.pose_prior["factor"] @ z).reshape(num_joints, 3)
        else:
            stride = rng.uniform(-1.0, 1.0)
            pose = self.walk * stride + rng.normal(0.0, 1.0, (num_joints, 3)) * self.joint_sigmas
        u = rng.uniform(-1.0, 1.0)
        if self.max_yaw >= np.pi / 2:
            heading = np.pi * u
        else:   # u >= 0: within max_yaw of facing right (heading 0), else of facing left (pi)
            heading = self.max_yaw * (2 * u - 1) if u >= 0 else np.pi + self.max_yaw * (2 * u + 1)
        pose[0] = [0.0, 0.0, heading]
        return pose

    def _camera(self, rng, vertices) -> Camera:
        """Looks at the body from 0-25 degrees above, from a distance at which it spans 25-75%
        of the picture's longer side, placed anywhere in the picture."""
        width, height = self.image_size
        focal = float(full_image_focal_length(np.array([width, height])))
        centre = (vertices.min(0) + vertices.max(0)) / 2
        radius = np.max(np.linalg.norm(vertices - centre, axis=1))
        span = rng.uniform(0.25, 0.75)
        distance = focal * 2 * radius / (span * max(width, height))
        elevation = rng.uniform(0.0, np.radians(25.0))
        position = centre + distance * np.array([0.0, -np.cos(elevation), np.sin(elevation)])
        # Off-centre: aim at a point beside the body, within what keeps it in the picture.
        room = np.maximum(np.array([width, height]) / 2 - span * max(width, height) / 2, 0.0) * 0.8
        shift = rng.uniform(-1.0, 1.0, 2) * room / focal * distance
        target = centre - shift[0] * np.array([1.0, 0.0, 0.0]) + shift[1] * np.array([0.0, 0.0, 1.0])
        rotation = look_at(position, target, roll=rng.normal(0.0, np.radians(2.0)))
        return Camera(position, rotation, focal, (width / 2.0, height / 2.0), width, height)

    def _look(self, rng, extent) -> Look:
        fur = np.clip(FUR_PALETTE[rng.integers(len(FUR_PALETTE))] * rng.uniform(0.85, 1.15, 3), 0.0, 1.0)
        sky = SKY_PALETTE[rng.integers(len(SKY_PALETTE))] * rng.uniform(0.9, 1.1, (2, 3))
        ground = GROUND_PALETTE[rng.integers(len(GROUND_PALETTE))] * rng.uniform(0.85, 1.15, (2, 3))
        light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-1.0, -0.1), -1.0])
        sky = np.clip(sky, 0.0, 1.0)
        ground = np.clip(ground, 0.0, 1.0)
        return Look(fur=tuple(fur), patches=rng.uniform(0.0, 0.6) * (rng.random() < 0.4),
                    patch_waves=tuple(map(tuple, rng.normal(0.0, 6.0, (3, 3)))),
                    light=tuple(light / np.linalg.norm(light)), ambient=rng.uniform(0.15, 0.45),
                    sky_top=tuple(sky[0]), sky_horizon=tuple(sky[1]), ground_near=tuple(ground[0]),
                    ground_far=tuple(ground[1]), checker=rng.uniform(0.0, 0.06), checker_size=rng.uniform(1.0, 4.0),
                    haze=rng.uniform(20.0, 80.0), shadow=rng.uniform(0.2, 0.6),
                    shadow_axes=(0.6 * extent[0], 1.35 * extent[1]),
                    noise=rng.uniform(0.0, 0.02))

    def _box(self, rng, pixels) -> np.ndarray:
        """A detector's box around the projected body [N, 2]: sides jittered, grown 0-100%
        (log-uniform), in 15% of scenes cut on one side by 10-35%."""
        low, high = pixels.min(0), pixels.max(0)
        size = high - low
        low = low + rng.normal(0.0, 0.03, 2) * size
        high = high + rng.normal(0.0, 0.03, 2) * size
        if rng.random() < 0.15:
            side, cut = int(rng.integers(4)), rng.uniform(0.1, 0.35)
            axis = side % 2
            if side < 2:
                low[axis] += cut * size[axis]
            else:
                high[axis] -= cut * size[axis]
        centre, half = (low + high) / 2, (high - low) / 2 * np.exp(rng.uniform(0.0, np.log(2.0)))
        return np.concatenate([centre - half, centre + half])
