"""A fit's schedule as configuration: stages (iterations, learning rate, which parameters are
free, the terms' weights), as SMALify stages its optimisation: the camera and the torso first,
then everything.

Parameter groups a stage may free:
    transl   the camera translation (full-image camera: image-plane offset and log depth)
    global   joint 0's rotation (the body's orientation in the camera frame)
    torso    the pelvis and spine joints
    limbs    every other joint (legs, neck, head, tail, jaw, ears)
    betas    the shape (one per track when the config shares it)
"""

from __future__ import annotations

import dataclasses

PARAMETER_GROUPS = ("transl", "global", "torso", "limbs", "betas")
TORSO_JOINTS = ("pelvis0", "spine", "spine0", "spine1", "spine2", "spine3")


@dataclasses.dataclass(frozen=True)
class TermWeights:
    """Each term's weight (animax.fit.terms); 0 leaves a term out of the compiled objective."""
    keypoints: float = 1.0
    silhouette_outside: float = 0.0
    silhouette_cover: float = 0.0
    pose_prior: float = 1e-4
    shape_prior: float = 1e-4
    joint_limits: float = 1e-2
    rotation_smoothness: float = 0.0
    trajectory_smoothness: float = 0.0

    def scaled(self, **factors) -> TermWeights:
        return dataclasses.replace(self, **{k: getattr(self, k) * v for k, v in factors.items()})


@dataclasses.dataclass(frozen=True)
class FitStage:
    name: str
    iterations: int
    learning_rate: float
    free: tuple[str, ...]
    weights: TermWeights

    def __post_init__(self):
        unknown = set(self.free) - set(PARAMETER_GROUPS)
        if unknown:
            raise ValueError(f"stage {self.name}: unknown parameter groups {sorted(unknown)}; "
                             f"choose from {PARAMETER_GROUPS}")
        if self.iterations < 1 or self.learning_rate <= 0:
            raise ValueError(f"stage {self.name}: iterations and learning_rate must be positive")


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """stages run in order, each with a fresh Adam; keypoint_sigma: the Geman-McClure scale in
    units of the animal's size; vertex_stride: every n-th vertex enters the silhouette terms;
    mask_grid: cells per side of the distance-transform grid; mask_points: mask pixels the
    cover term samples; shared_shape: one betas per track in a clip; chunk: iterations per
    compiled call (the progress bar advances per chunk)."""
    stages: tuple[FitStage, ...]
    keypoint_sigma: float = 0.15
    vertex_stride: int = 4
    mask_grid: int = 96
    mask_points: int = 256
    shared_shape: bool = True
    chunk: int = 50

    def with_weights(self, **factors) -> FitConfig:
        """Every stage's weights multiplied by `factors` (term name -> factor)."""
        return dataclasses.replace(self, stages=tuple(dataclasses.replace(s, weights=s.weights.scaled(**factors))
                                                      for s in self.stages))

    def with_iterations(self, factor: float) -> FitConfig:
        stages = tuple(dataclasses.replace(s, iterations=max(1, round(s.iterations * factor))) for s in self.stages)
        return dataclasses.replace(self, stages=stages)


def default_config(masks: bool = False, clip: bool = False, from_network: bool = True) -> FitConfig:
    """SMALify-style two stages: the camera and the body's orientation and torso against the
    keypoints, then everything; silhouette terms when masks are given, temporal terms for a clip.
    Without a network's start the first stage runs longer (it starts from the mean pose)."""
    silhouette = dict(silhouette_outside=1.0, silhouette_cover=1.0) if masks else {}
    temporal = dict(rotation_smoothness=0.05, trajectory_smoothness=10.0) if clip else {}
    first = TermWeights(**temporal)
    last = TermWeights(**silhouette, **temporal)
    return FitConfig(stages=(
        FitStage("camera_torso", 100 if from_network else 200, 0.02, ("transl", "global", "torso"), first),
        FitStage("all", 200 if from_network else 300, 0.01, PARAMETER_GROUPS, last),
    ))
