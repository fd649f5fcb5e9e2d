"""Pictures of predictions: the crop overlay with keypoints and mesh, and a side view; used by
predict, track and training."""
