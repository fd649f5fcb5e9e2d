"""AP-10K's 17 keypoints -> the 26 SMAL keypoints (animax.smal.KEYPOINT_NAMES).

AP-10K labels the front leg as shoulder, elbow, paw and the hind leg as hip, knee, paw:
its "elbow" is the middle joint of the front leg and its "knee" the middle joint of the
hind leg, which Animal3D calls the front and back knees; its "hip" is the top of the hind
leg, Animal3D's back thigh. Every AP-10K keypoint has a counterpart.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.name = "ap10k"
    # Source order, as in the AP-10K annotation files' categories[].keypoints.
    config.keypoints = (
        "left_eye", "right_eye", "nose", "neck", "root_of_tail", "left_shoulder",
        "left_elbow", "left_front_paw", "right_shoulder", "right_elbow", "right_front_paw",
        "left_hip", "left_knee", "left_back_paw", "right_hip", "right_knee", "right_back_paw",
    )
    config.to_smal = {
        "left_eye": "left_eye",
        "right_eye": "right_eye",
        "nose": "nose",
        "neck": "neck",
        "root_of_tail": "tail_base",
        "left_shoulder": "left_shoulder",
        "right_shoulder": "right_shoulder",
        "left_elbow": "left_front_knee",
        "right_elbow": "right_front_knee",
        "left_front_paw": "left_front_paw",
        "right_front_paw": "right_front_paw",
        "left_hip": "left_back_thigh",
        "right_hip": "right_back_thigh",
        "left_knee": "left_back_knee",
        "right_knee": "right_back_knee",
        "left_back_paw": "left_back_paw",
        "right_back_paw": "right_back_paw",
    }
    return config
