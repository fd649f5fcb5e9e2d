"""SMAL layout facts shared by every body model animax uses (AniMer's values)."""

JOINT_NAMES = (
    "root", "pelvis0", "spine", "spine0", "spine1", "spine2", "spine3",
    "LLeg1", "LLeg2", "LLeg3", "LFoot", "RLeg1", "RLeg2", "RLeg3", "RFoot",
    "Neck", "Head",
    "LLegBack1", "LLegBack2", "LLegBack3", "LFootBack",
    "RLegBack1", "RLegBack2", "RLegBack3", "RFootBack",
    "Tail1", "Tail2", "Tail3", "Tail4", "Tail5", "Tail6", "Tail7",
    "Mouth", "LEar", "REar",
)

# Parent of each joint; -1 marks the root (the released pickle stores it as 2**32 - 1).
PARENTS = (-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 6, 11, 12, 13, 6, 15, 0, 17, 18, 19,
           0, 21, 22, 23, 0, 25, 26, 27, 28, 29, 30, 16, 16, 16)

NUM_JOINTS = len(JOINT_NAMES)

# Animal3D keypoint order, as AniMer predicts them.
KEYPOINT_NAMES = (
    "left_eye", "right_eye", "mouth_mid", "left_front_paw", "right_front_paw",
    "left_back_paw", "right_back_paw", "tail_base", "left_front_thigh", "right_front_thigh",
    "left_back_thigh", "right_back_thigh", "left_shoulder", "right_shoulder",
    "left_front_knee", "right_front_knee", "left_back_knee", "right_back_knee", "neck",
    "tail_end", "left_ear", "right_ear", "left_mouth", "right_mouth", "nose", "tail_mid",
)

# Keypoint k is the mean of these vertices of the 3889-vertex released SMAL mesh.
SMAL_KEYPOINT_VERTEX_SETS = (
    (1068, 1080, 1029, 1226), (2660, 3030, 2675, 3038), (910,), (360, 1203, 1235, 1230),
    (3188, 3156, 2327, 3183), (1976, 1974, 1980, 856), (3854, 2820, 3852, 3858), (452, 1811),
    (416, 235, 182), (2156, 2382, 2203), (829,), (2793,), (60, 114, 186, 59),
    (2091, 2037, 2036, 2160), (384, 799, 1169, 431), (2351, 2763, 2397, 3127),
    (221, 104), (2754, 2192), (191, 1158, 3116, 2165),
    (28, 1109, 1110, 1111, 1835, 1836, 3067, 3068, 3069),
    (498, 499, 500, 501, 502, 503), (2463, 2464, 2465, 2466, 2467, 2468),
    (764, 915, 916, 917, 934, 935, 956), (2878, 2879, 2880, 2897, 2898, 2919, 3751),
    (1039, 1845, 1846, 1870, 1879, 1919, 2997, 3761, 3762),
    (0, 464, 465, 726, 1824, 2429, 2430, 2690),
)
SMAL_NUM_VERTICES = 3889

# Keypoints that outline the head (eyes, mouth, ears, mouth corners, nose): the head crop uses them.
HEAD_KEYPOINTS = (0, 1, 2, 20, 21, 22, 23, 24)
