"""Renders the bundled clip, examples/standin_walk.mp4: the stand-in quadruped walking across the
picture (animax's rasteriser, the bundled example's camera and look), and the two-animal clip the
tests use, with the true keypoints and boxes of every frame.

    python examples/make_clip.py                 # writes examples/standin_walk.mp4

Each walker is the mean shape with `walking_pose` scaled by a stride that swings with the gait
phase, moving along its heading at a walking pace; the clip is reproducible to the pixel.
"""

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from animax.data import scenes
from animax.geometry import full_image_focal_length
from animax.smal import load_smal
from animax.smal.standin import walking_pose
from animax.track.frames import VideoWriter

FPS = 12.0
NUM_FRAMES = 24
SIZE = (320, 240)                       # (W, H): small, so that the clip and its tests stay quick
CAMERA = np.array([0.0, -13.0, 0.8])   # world: x forward of the walker facing +x, y left, z up
STEP = 0.06                             # metres per frame (about 6 pixels)
GAIT_FRAMES = 12                        # frames per stride cycle


@dataclasses.dataclass(frozen=True)
class Walker:
    start: float            # x at frame 0 (metres)
    direction: int          # +1 walks towards +x (facing right in the picture), -1 towards -x
    depth: float = 0.0      # y of its path: positive is farther from the camera
    fur: tuple = (0.62, 0.44, 0.30)


ONE_WALKER = (Walker(start=-0.75, direction=1),)
# Two animals crossing: the near one walks right, the far one left; they overlap mid-clip.
TWO_WALKERS = (Walker(start=-0.8, direction=1, fur=(0.62, 0.44, 0.30)),
               Walker(start=1.1, direction=-1, depth=2.5, fur=(0.30, 0.20, 0.13)))


def _camera(width, height):
    focal = float(full_image_focal_length(np.array([width, height])))
    return scenes.Camera(CAMERA, scenes.look_at(CAMERA, np.array([0.0, 0.0, 0.6])), focal,
                         (width / 2, height / 2), width, height)


def walker_scene(body, walker: Walker, frame: int, camera) -> scenes.Scene:
    pose = walking_pose(body.num_joints).astype(np.float64) * np.sin(2 * np.pi * frame / GAIT_FRAMES)
    pose[0] = [0.0, 0.0, 0.0 if walker.direction > 0 else np.pi]
    posed = scenes.pose_body(body, np.zeros(body.num_betas), pose, np.zeros(3))
    ground = posed.vertices[:, 2].min()
    offset = np.array([walker.start + walker.direction * STEP * frame, walker.depth, -ground])
    return scenes.Scene(betas=np.zeros(body.num_betas), pose=pose, offset=offset, camera=camera,
                        look=scenes.Look(fur=walker.fur), box=np.array([0.0, 0.0, camera.width, camera.height]))


def render_clip(walkers=ONE_WALKER, num_frames=NUM_FRAMES, size=SIZE, body=None):
    """(frames uint8 [T, H, W, 3], truth) where truth[w] holds walker w's per-frame `keypoints_2d`
    [T, K, 3] (x, y, visible in the picture), `box` [T, 4] and `mask_area` [T] of its own mask
    (before the nearer walkers cover it), `pose` [T, J, 3] (axis-angle, joint 0 in the camera
    frame) and `trans` [T, 3] (placing the posed body model in the camera frame, as cam_t_full).
    Nearer walkers are drawn over farther ones."""
    body = load_smal() if body is None else body
    camera = _camera(*size)
    order = sorted(range(len(walkers)), key=lambda w: -walkers[w].depth)      # far to near
    frames = []
    truth = [{"keypoints_2d": [], "box": [], "pose": [], "trans": [], "mask_area": []} for _ in walkers]
    for t in range(num_frames):
        picture = None
        for w in order:
            scene = walker_scene(body, walkers[w], t, camera)
            posed = scene.posed_body(body)
            image, mask = scenes.render(scene, body, posed=posed)
            picture = image if picture is None else np.where(mask[..., None], image, picture)
            found = scenes.labels(scene, posed, camera)
            ys, xs = np.nonzero(mask)
            truth[w]["keypoints_2d"].append(found["keypoints_2d"])
            truth[w]["box"].append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            truth[w]["pose"].append(found["pose"])
            truth[w]["trans"].append(found["trans"])
            truth[w]["mask_area"].append(mask.sum())
        frames.append(np.round(255 * picture).astype(np.uint8))
    return np.stack(frames), [{k: np.asarray(v, np.float64) for k, v in d.items()} for d in truth]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "standin_walk.mp4"))
    args = parser.parse_args()
    frames, _ = render_clip()
    with VideoWriter(args.out, FPS) as video:
        for frame in frames:
            video.write(frame)


if __name__ == "__main__":
    main()
