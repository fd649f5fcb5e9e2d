"""Animal-Pose's 20 keypoints (Cao et al., ICCV 2019) -> the 26 SMAL keypoints.

Each leg is labelled elbow, knee, paw, where its "knee" is the lower joint (carpus / hock),
which Animal3D and the Horse-10 map call the front and back knee. Left unmapped, as the
Horse-10 map leaves what sits a few centimetres from a SMAL keypoint: the ear bases (SMAL's
ear keypoints are the tips), the throat, the withers and the elbows.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.name = "animal_pose"
    # Source order, as mmpose's AnimalPoseDataset and the dataset's keypoints.json.
    config.keypoints = (
        "L_Eye", "R_Eye", "L_EarBase", "R_EarBase", "Nose", "Throat", "TailBase", "Withers",
        "L_F_Elbow", "R_F_Elbow", "L_B_Elbow", "R_B_Elbow", "L_F_Knee", "R_F_Knee", "L_B_Knee", "R_B_Knee",
        "L_F_Paw", "R_F_Paw", "L_B_Paw", "R_B_Paw",
    )
    config.to_smal = {
        "L_Eye": "left_eye",
        "R_Eye": "right_eye",
        "Nose": "nose",
        "TailBase": "tail_base",
        "L_F_Knee": "left_front_knee",
        "R_F_Knee": "right_front_knee",
        "L_B_Knee": "left_back_knee",
        "R_B_Knee": "right_back_knee",
        "L_F_Paw": "left_front_paw",
        "R_F_Paw": "right_front_paw",
        "L_B_Paw": "left_back_paw",
        "R_B_Paw": "right_back_paw",
    }
    return config
