"""The command lines: `animax-infer`, `animax-convert`, `animax-train` (console scripts of the
package), also run as the checkout's `infer.py`, `convert_weights.py`, `train.py`."""
