"""Horse-10 (DeepLabCut) body parts -> the 26 SMAL keypoints (animax.smal.KEYPOINT_NAMES).

"Near" is the horse's left side and "off" its right (horsemanship's convention, which
Horse-10 follows). Only parts with a clear SMAL counterpart are mapped; the others get
confidence 0:
- Eye: one eye is labelled, whichever faces the camera, so its side is unknown.
- Front and hind fetlocks, Elbow, Girth, Midshoulder, Hip (point of hip), Stifle: no SMAL
  keypoint sits there, and Shoulder/Elbow/Stifle are labelled on whichever side is visible.
- Wither, Ischium: near SMAL's neck and tail base but a few centimetres off on a horse;
  mapping them would teach a systematic offset.
The hock is the joint halfway down the hind leg, which Animal3D labels as the back knee.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.name = "horse10"
    # Source order: DeepLabCut's bodyparts and the mmpose Horse-10 JSON's keypoints.
    config.keypoints = (
        "Nose", "Eye", "Nearknee", "Nearfrontfetlock", "Nearfrontfoot", "Offknee",
        "Offfrontfetlock", "Offfrontfoot", "Shoulder", "Midshoulder", "Elbow", "Girth",
        "Wither", "Nearhindhock", "Nearhindfetlock", "Nearhindfoot", "Hip", "Stifle",
        "Offhindhock", "Offhindfetlock", "Offhindfoot", "Ischium",
    )
    config.to_smal = {
        "Nose": "nose",
        "Nearknee": "left_front_knee",
        "Offknee": "right_front_knee",
        "Nearfrontfoot": "left_front_paw",
        "Offfrontfoot": "right_front_paw",
        "Nearhindhock": "left_back_knee",
        "Offhindhock": "right_back_knee",
        "Nearhindfoot": "left_back_paw",
        "Offhindfoot": "right_back_paw",
    }
    return config
