"""Fixtures shared by the test files: one small synthetic set, written once per test session."""
import pytest

import synthetic


@pytest.fixture(scope="session")
def small_config():
    """2 training and 1 validation video per class, 24 frames of 64x48 pixels, 3 images per class."""
    return synthetic.SyntheticConfig(train_per_class=2, val_per_class=1, frames=24, width=64, height=48,
                                     images_per_class=3)


@pytest.fixture(scope="session")
def syn(tmp_path_factory, small_config):
    """synthetic.synthetic_paths of the small set: {"k400_train_csv": Path, "mp4_root": Path, ...}."""
    root = synthetic.synthetic_root(tmp_path_factory.mktemp("cache") / "synthetic", small_config)
    return synthetic.synthetic_paths(root)
