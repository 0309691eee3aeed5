"""The Fashion-MNIST IDX loader: formats, the deterministic split, the missing-file error."""
import numpy as np
import pytest

from pyruntime.train import data as D  # numpy only: runs without torch


def test_missing_file_error_gives_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRUNTIME_DATA", str(tmp_path))
    with pytest.raises(D.DatasetMissingError) as e:
        D.load_fashion_mnist()
    msg = str(e.value)
    assert "apt-get update && apt-get install -y dataset-fashion-mnist" in msg
    assert str(tmp_path) in msg and "PYRUNTIME_DATA" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_idx_roundtrip_and_env_override(tmp_path, monkeypatch):
    D.write_fake_dataset(tmp_path, n_train=500, n_test=100)
    monkeypatch.setenv("PYRUNTIME_DATA", str(tmp_path))
    assert D.data_dir() == tmp_path
    d = D.load_fashion_mnist()
    assert d.train.x.dtype == np.float32 and d.train.x.shape[1:] == (1, 28, 28)
    assert d.train.x.min() >= 0.0 and d.train.x.max() <= 1.0
    assert d.train.y.dtype == np.int64
    assert len(d.train) + len(d.val) == 500 and len(d.test) == 100
    # deterministic: the same split twice, disjoint from training
    d2 = D.load_fashion_mnist()
    assert np.array_equal(d.val.x, d2.val.x) and np.array_equal(d.train.y, d2.train.y)
    raw = D.read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert raw.shape == (500, 28, 28) and raw.dtype == np.uint8
    # an uncompressed IDX file reads the same
    D.write_idx(tmp_path / "plain-idx1-ubyte", np.arange(7))
    assert D.read_idx(tmp_path / "plain-idx1-ubyte").tolist() == list(range(7))


def test_real_dataset_split_if_installed():
    try:
        d = D.load_fashion_mnist()
    except D.DatasetMissingError as e:
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    assert (len(d.train), len(d.val), len(d.test)) == (55000, 5000, 10000)
    assert np.bincount(d.val.y, minlength=10).min() > 400  # a seeded permutation, not a class-sorted tail
