"""DeepLabCut's SuperAnimal-Quadruped body parts (39, Ye et al., Nature Communications 2024)
-> the 26 SMAL keypoints (animax.smal.KEYPOINT_NAMES).

Names and order as in its published dataset definition (ids 0-38). "left"/"right" are the
animal's own sides (the definition's swap pairs). Mapped: the parts with a SMAL keypoint at the
same place. Left out (confidence 0):
- upper_jaw, lower_jaw: SMAL's mouth_mid lies between them, neither is it;
- ear bases and ear tips: SMAL's ear keypoints are a ring of vertices between the two;
- antlers, throat, back, neck_base/neck_end, belly, body_middle: no SMAL keypoint there
  (SMAL's neck keypoint is where the neck meets the shoulders, between neck_base and throat_base).
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.name = "superanimal_quadruped"
    config.keypoints = (
        "nose", "upper_jaw", "lower_jaw", "mouth_end_right", "mouth_end_left", "right_eye",
        "right_earbase", "right_earend", "right_antler_base", "right_antler_end", "left_eye",
        "left_earbase", "left_earend", "left_antler_base", "left_antler_end", "neck_base",
        "neck_end", "throat_base", "throat_end", "back_base", "back_end", "back_middle",
        "tail_base", "tail_end", "front_left_thigh", "front_left_knee", "front_left_paw",
        "front_right_thigh", "front_right_knee", "front_right_paw", "back_left_paw",
        "back_left_thigh", "back_right_thigh", "back_left_knee", "back_right_knee",
        "back_right_paw", "belly_bottom", "body_middle_right", "body_middle_left",
    )
    config.to_smal = {
        "nose": "nose",
        "mouth_end_left": "left_mouth",
        "mouth_end_right": "right_mouth",
        "left_eye": "left_eye",
        "right_eye": "right_eye",
        "tail_base": "tail_base",
        "tail_end": "tail_end",
        "front_left_thigh": "left_front_thigh",
        "front_right_thigh": "right_front_thigh",
        "front_left_knee": "left_front_knee",
        "front_right_knee": "right_front_knee",
        "front_left_paw": "left_front_paw",
        "front_right_paw": "right_front_paw",
        "back_left_thigh": "left_back_thigh",
        "back_right_thigh": "right_back_thigh",
        "back_left_knee": "left_back_knee",
        "back_right_knee": "right_back_knee",
        "back_left_paw": "left_back_paw",
        "back_right_paw": "right_back_paw",
    }
    return config
