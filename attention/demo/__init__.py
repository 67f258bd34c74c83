"""Demo models trained on a procedural shapes dataset with ground-truth masks.

- `attention.demo.shapes`: the dataset (`make_sample`, `make_dataset`, `write_dataset`, `CLASS_NAMES`).
- `attention.demo.models`: four small attention classifiers (`DEMO_ARCHS`, `build_model`, `default_config`).
- `attention.demo.train`: deterministic CPU training (`train`, `train_and_save`).
- `attention.demo.quality`: accuracy / pointing game / AUROC of attention maps vs masks (`evaluate_maps`).
CLI: ``python -m attention.demo {dataset,train,evaluate} ...``.
"""
from .shapes import CLASS_NAMES, make_dataset, make_sample, write_dataset

__all__ = ["CLASS_NAMES", "make_dataset", "make_sample", "write_dataset"]
