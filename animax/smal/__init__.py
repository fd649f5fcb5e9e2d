"""The SMAL body model: loading, skinning, keypoints, priors and the stand-in quadruped."""

from animax.smal.bank import BodyModelBank, load_body, make_bank, smal_forward_grouped, smal_forward_mixed
from animax.smal.constants import HEAD_KEYPOINTS, JOINT_NAMES, KEYPOINT_NAMES, NUM_JOINTS, PARENTS
from animax.smal.io import load_pickle, load_smal, save_obj, save_smal
from animax.smal.model import SMALModel, make_smal_model, smal_forward
from animax.smal.priors import PosePrior, ShapePrior, load_pose_prior, load_shape_prior, pose_prior, shape_prior
