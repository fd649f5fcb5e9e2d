"""Training data: TFDS builders (array_record, no TensorFlow needed) and a grain pipeline.

Importing this package registers the builders with TFDS: `horse10`, `animal3d`,
`coco_keypoints`, `synthetic_quadruped`. Build one with
`python -m animax.data.build NAME --manual_dir SRC --data_dir DST`, read it with
`open_source` and `make_loader` (see animax/data/loader.py for the batch format).
"""

from animax.data.animal3d import Animal3d
from animax.data.augment import Augmentation, AugmentConfig
from animax.data.coco_keypoints import CocoKeypoints
from animax.data.horse10 import Horse10
from animax.data.loader import make_loader, open_source, prepare_example
from animax.data.synthetic_quadruped import SyntheticQuadruped

BUILDERS = {cls.name: cls for cls in (Horse10, Animal3d, CocoKeypoints, SyntheticQuadruped)}

__all__ = ["Animal3d", "AugmentConfig", "Augmentation", "BUILDERS", "CocoKeypoints", "Horse10",
           "SyntheticQuadruped", "make_loader", "open_source", "prepare_example"]
