"""npnorm.data: the digits split and its scaling, the adding problem, the batch iterator, the missing-extra error."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from npnorm import data
from npnorm.data import Batches, MissingExtraError, adding_problem, load_digits, stratified_split

try:
    import sklearn  # noqa: F401

    HAVE_SKLEARN = True
except ImportError:
    HAVE_SKLEARN = False
needs_sklearn = pytest.mark.skipif(not HAVE_SKLEARN, reason="the digits need scikit-learn (npnorm[examples])")


@pytest.fixture(scope="module")
def raw():
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    return d.data.astype(np.float64), d.target.astype(np.int64)


# ------------------------------------------------------------------------------------------- digits


@needs_sklearn
@pytest.mark.parametrize(
    "layout, shape", [("flat", (64,)), ("rows", (8, 8)), ("pixels", (64, 1))], ids=["flat", "rows", "pixels"]
)
@needs_sklearn
def test_layouts_have_the_documented_shapes(layout, shape):
    d = load_digits(layout)
    assert d.x_train.shape == (len(d.y_train), *shape)
    assert d.x_test.shape == (len(d.y_test), *shape)
    assert len(d.y_train) + len(d.y_test) == 1797
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64


@needs_sklearn
def test_dtype_option():
    assert load_digits(dtype=np.float64).x_train.dtype == np.float64
    with pytest.raises(TypeError, match="float32 or float64"):
        load_digits(dtype=np.int32)


@needs_sklearn
def test_split_is_stratified_disjoint_and_complete(raw):
    _, y = raw
    train, test = stratified_split(y, 0.25, seed=3)
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(y)))
    for label in range(10):
        count = np.count_nonzero(y == label)
        assert np.count_nonzero(y[test] == label) == round(0.25 * count)  # each class keeps its share


@needs_sklearn
def test_split_is_fixed_by_the_seed():
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_test, c.y_test)


@needs_sklearn
def test_standardization_uses_training_statistics_only(raw):
    x, y = raw
    train, test = stratified_split(y, 0.25, seed=0)
    d = load_digits(seed=0, dtype=np.float64)
    assert d.mean == pytest.approx(x[train].mean(), rel=1e-12)
    assert d.std == pytest.approx(x[train].std(), rel=1e-12)
    assert d.mean != pytest.approx(x.mean(), rel=1e-6)  # the whole set (test images included) gives another scale
    np.testing.assert_allclose(d.x_test, (x[test] - d.mean) / d.std, rtol=1e-12)
    assert d.x_train.mean() == pytest.approx(0, abs=1e-9) and d.x_train.std() == pytest.approx(1, rel=1e-9)
    assert abs(d.x_test.mean()) > 1e-6  # the test part is not re-centred on its own statistics


@needs_sklearn
def test_sequence_layouts_hold_the_same_pixels():
    flat, rows, pixels = (load_digits(layout, seed=2) for layout in ("flat", "rows", "pixels"))
    np.testing.assert_array_equal(rows.x_train.reshape(-1, 64), flat.x_train)
    order = np.random.default_rng(data.PIXEL_ORDER_SEED).permutation(64)
    np.testing.assert_array_equal(pixels.x_train[:, :, 0], flat.x_train[:, order])
    assert not np.array_equal(order, np.arange(64))  # really permuted, and the same for every split seed
    np.testing.assert_array_equal(
        load_digits("pixels", seed=5).x_train[:, :, 0][:3], load_digits("flat", seed=5).x_train[:3, order]
    )


@needs_sklearn
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layout": "grid"}, "layout"),
        ({"seed": -1}, "seed"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": 0.999}, "leaves the training part empty"),  # each class rounds up to all-test
        ({"test_fraction": 0.001}, "leaves the test part empty"),  # each class rounds down to none
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_digits(**kwargs)


# ------------------------------------------------------------------------------------ adding problem


@pytest.mark.parametrize("T", [2, 3, 10, 50])
def test_adding_problem_targets_are_the_sum_of_the_two_marked_values(T):
    x, y = adding_problem(200, T, seed=1)
    assert x.shape == (200, T, 2) and y.shape == (200,) and x.dtype == np.float32
    values, markers = x[..., 0], x[..., 1]
    assert np.all(markers.sum(axis=1) == 2)
    assert np.all(markers[:, : T // 2].sum(axis=1) == 1)  # one marker in each half
    assert np.all((values >= 0) & (values < 1))
    np.testing.assert_allclose(y, (values * markers).sum(axis=1), rtol=1e-6)


def test_adding_problem_is_seeded():
    a, b, c = adding_problem(50, 20, seed=4), adding_problem(50, 20, seed=4), adding_problem(50, 20, seed=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert adding_problem(5, 8, dtype=np.float64)[0].dtype == np.float64


def test_stratified_split_refuses_to_leave_a_part_empty():
    y = np.array([0, 0, 1, 1, 1])
    train, test = stratified_split(y, 0.5, seed=0)
    assert len(train) and len(test) and sorted([*train, *test]) == list(range(5))
    for labels in (np.array([], dtype=np.int64), np.array([3])):
        with pytest.raises(ValueError, match="at least 2 samples"):
            stratified_split(labels, 0.5, seed=0)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, bool])
def test_adding_problem_takes_float32_or_float64_only(dtype):
    with pytest.raises(TypeError, match="float32 or float64"):
        adding_problem(5, 8, dtype=dtype)  # an integer dtype would truncate every value to 0


@pytest.mark.parametrize("n, T", [(0, 10), (10, 1), (2.5, 10)])
def test_adding_problem_rejects_bad_sizes(n, T):
    with pytest.raises(ValueError):
        adding_problem(n, T)


# ------------------------------------------------------------------------------------------ batches


def test_batches_cover_every_sample_once_per_epoch_in_a_seeded_order():
    x, y = np.arange(10.0)[:, None], np.arange(10)
    batches = Batches(x, y, 4, seed=7)
    assert len(batches) == 3
    epoch1 = [yb for _, yb in batches]
    epoch2 = [yb for _, yb in batches]
    assert [len(b) for b in epoch1] == [4, 4, 2]
    assert sorted(np.concatenate(epoch1)) == list(range(10))
    assert not np.array_equal(np.concatenate(epoch1), np.concatenate(epoch2))  # a new order every epoch
    again = Batches(x, y, 4, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(epoch1, (yb for _, yb in again)))
    for xb, yb in Batches(x, y, 3, seed=0):
        np.testing.assert_array_equal(xb[:, 0], yb)  # x and y stay paired


def test_batches_drop_last_and_no_shuffle():
    x, y = np.zeros((10, 2)), np.arange(10)
    assert len(Batches(x, y, 4, drop_last=True)) == 2
    assert [list(yb) for _, yb in Batches(x, y, 4, shuffle=False)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(ValueError, match="batch_size"):
        Batches(x, y, 0)
    with pytest.raises(ValueError, match="samples"):
        Batches(x, y[:5], 2)


# ------------------------------------------------------------------------------------ missing extra


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes `import sklearn.datasets` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'npnorm\[examples\]'") as info:
        load_digits()
    assert isinstance(info.value, ImportError)
    assert "scikit-learn" in str(info.value)
