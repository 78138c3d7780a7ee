"""Tests of fmrivid.decoders.ridge.RidgeCV against scikit-learn and brute force."""

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.linear_model import Ridge
from sklearn.linear_model import RidgeCV as SkRidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold

from fmrivid.decoders.ridge import RidgeCV, _gram
from fmrivid.errors import InputError

ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4)


def make_data(n, p, t=6, seed=0, n_test=15):
    """X with non-zero means; Y = X W + noise with a different noise level per target."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + n_test, p)) + rng.uniform(-3, 3, p)
    W = rng.standard_normal((p, t)) / np.sqrt(p)
    noise = np.logspace(-2, 1, t)
    Y = X @ W + rng.standard_normal((n + n_test, t)) * noise + rng.uniform(-5, 5, t)
    return X[:n], Y[:n], X[n:], Y[n:]


def brute_force_kfold(X, Y, alphas, folds, scoring, fit_intercept=True):
    """Per-fold held-out scores of sklearn Ridge, averaged over folds: (n_alphas, t)."""
    out = np.zeros((len(alphas), Y.shape[1]))
    for i, alpha in enumerate(alphas):
        for tr, va in folds:
            ridge = Ridge(alpha=alpha, fit_intercept=fit_intercept).fit(X[tr], Y[tr])
            pred = ridge.predict(X[va])
            if scoring == "mse":
                score = ((pred - Y[va]) ** 2).mean(0)
            elif scoring == "r2":
                score = r2_score(Y[va], pred, multioutput="raw_values")
            else:
                score = np.array([np.corrcoef(pred[:, j], Y[va][:, j])[0, 1]
                                  for j in range(Y.shape[1])])
            out[i] += score / len(folds)
    return out


# --------------------------------------------------------------------------- #
# Leave-one-out mode == scikit-learn's GCV mode
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("n,p", [(50, 120), (120, 30)], ids=["dual n<p", "primal n>p"])
def test_loo_matches_sklearn_gcv(n, p):
    X, Y, Xte, _ = make_data(n, p)
    sk = SkRidgeCV(alphas=ALPHAS, alpha_per_target=True, store_cv_results=True).fit(X, Y)
    ours = RidgeCV(ALPHAS, cv="loo").fit(X, Y)
    assert len(set(ours.alpha_)) > 1, "test data should need different alphas per target"
    np.testing.assert_array_equal(ours.alpha_, sk.alpha_)
    np.testing.assert_allclose(ours.predict(Xte), sk.predict(Xte), atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours.coef_, sk.coef_.T, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ours.intercept_, sk.intercept_, rtol=1e-7, atol=1e-9)
    # sklearn stores the squared LOO errors: (n_samples, n_targets, n_alphas)
    np.testing.assert_allclose(ours.cv_scores_, sk.cv_results_.mean(0).T, rtol=1e-7)
    assert ours.predict(Xte).dtype == np.float32
    assert ours.predict(Xte).shape == (Xte.shape[0], Y.shape[1])


@pytest.mark.parametrize("n,p", [(40, 90), (90, 25)], ids=["dual", "primal"])
def test_loo_is_exact_leave_one_out(n, p):
    """The closed form equals refitting sklearn Ridge n times, for every scoring."""
    X, Y, _, _ = make_data(n, p, t=3, seed=3)
    alphas = (0.1, 10.0, 1e3)
    folds = [(np.delete(np.arange(n), i), np.array([i])) for i in range(n)]
    errors = np.zeros((len(alphas), n, Y.shape[1]))
    for a, alpha in enumerate(alphas):
        for tr, va in folds:
            errors[a, va] = Ridge(alpha=alpha).fit(X[tr], Y[tr]).predict(X[va]) - Y[va]
    preds = Y[None] + errors
    expected = {
        "mse": (errors ** 2).mean(1),
        "r2": np.array([r2_score(Y, pr, multioutput="raw_values") for pr in preds]),
        "corr": np.array([[np.corrcoef(pr[:, j], Y[:, j])[0, 1] for j in range(Y.shape[1])]
                          for pr in preds]),
    }
    for scoring, want in expected.items():
        ours = RidgeCV(alphas, cv="loo", scoring=scoring).fit(X, Y)
        np.testing.assert_allclose(ours.cv_scores_, want, rtol=1e-7, atol=1e-10)
        best = want.argmin(0) if scoring == "mse" else want.argmax(0)
        np.testing.assert_array_equal(ours.alpha_, np.asarray(alphas)[best])


def test_loo_without_intercept_and_shared_alpha_match_sklearn():
    X, Y, Xte, _ = make_data(45, 70, seed=5)
    Y = Y - Y.mean(0)  # a no-intercept model needs roughly centred data to be sensible
    sk = SkRidgeCV(alphas=ALPHAS, alpha_per_target=True, fit_intercept=False).fit(X, Y)
    ours = RidgeCV(ALPHAS, cv="loo", fit_intercept=False).fit(X, Y)
    np.testing.assert_array_equal(ours.alpha_, sk.alpha_)
    np.testing.assert_allclose(ours.predict(Xte), sk.predict(Xte), atol=1e-4, rtol=0)
    assert np.all(ours.intercept_ == 0)

    sk1 = SkRidgeCV(alphas=ALPHAS, alpha_per_target=False).fit(X, Y)
    ours1 = RidgeCV(ALPHAS, cv="loo", alpha_per_target=False).fit(X, Y)
    assert np.all(ours1.alpha_ == sk1.alpha_)
    np.testing.assert_allclose(ours1.predict(Xte), sk1.predict(Xte), atol=1e-4, rtol=0)


@pytest.mark.parametrize("n,p", [(80, 200), (200, 40)], ids=["dual", "primal"])
def test_float32_matches_sklearn(n, p):
    X, Y, Xte, _ = make_data(n, p, seed=7)
    X, Y, Xte = (a.astype(np.float32) for a in (X, Y, Xte))
    sk = SkRidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X, Y)
    ours = RidgeCV(ALPHAS, cv="loo", dtype="float32").fit(X, Y)
    np.testing.assert_array_equal(ours.alpha_, sk.alpha_)
    np.testing.assert_allclose(ours.predict(Xte), sk.predict(Xte), atol=1e-4, rtol=0)
    assert ours.coef_.dtype == np.float32


@pytest.mark.parametrize("n,p,cv", [(300, 600, "loo"), (300, 600, 3), (400, 150, "loo")])
def test_float32_refined_to_float64_accuracy_on_spiky_spectrum(n, p, cv):
    """A few strong shared components (like fMRI) make plain float32 lose ~1e-4."""
    rng = np.random.default_rng(0)
    S = rng.standard_normal((n + 50, 5))
    X = (S @ rng.standard_normal((5, p)) * 3 + rng.standard_normal((n + 50, p)) + 2)
    noise = rng.standard_normal((n + 50, 20)) * np.logspace(0, 2, 20)
    Y = S @ rng.standard_normal((5, 20)) * 10 + noise
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    alphas = np.logspace(0, 6, 7)
    ref = RidgeCV(alphas, cv=cv).fit(X[:n], Y[:n])
    f32 = RidgeCV(alphas, cv=cv, dtype="float32").fit(X[:n], Y[:n])
    np.testing.assert_array_equal(f32.alpha_, ref.alpha_)
    want = ref.predict(X[n:])
    assert np.abs(f32.predict(X[n:]) - want).max() < 5e-6 * np.abs(want).max()


def test_float32_warns_when_ill_conditioned():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 20))
    X[:, 0] *= 1e5  # lambda_max / lambda_min ~ 1e10: far beyond float32
    Y = rng.standard_normal((60, 2))
    with pytest.warns(RuntimeWarning, match="float32"):
        RidgeCV((1e-3,), cv="loo", dtype="float32").fit(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RidgeCV((1e-3,), cv="loo", dtype="float64").fit(X, Y)


# --------------------------------------------------------------------------- #
# K-fold mode == brute force over alphas and folds with sklearn Ridge
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("scoring", ["mse", "r2", "corr"])
@pytest.mark.parametrize("n,p", [(53, 110), (110, 30)], ids=["dual", "primal"])
def test_kfold_matches_brute_force(n, p, scoring):
    X, Y, Xte, _ = make_data(n, p, seed=11)
    folds = list(KFold(5).split(X))  # contiguous blocks, sklearn's fold sizes
    want = brute_force_kfold(X, Y, ALPHAS, folds, scoring)
    ours = RidgeCV(ALPHAS, cv=5, scoring=scoring).fit(X, Y)
    np.testing.assert_allclose(ours.cv_scores_, want, rtol=1e-7, atol=1e-10)
    best = want.argmin(0) if scoring == "mse" else want.argmax(0)
    np.testing.assert_array_equal(ours.alpha_, np.asarray(ALPHAS)[best])
    refit = Ridge(alpha=ours.alpha_).fit(X, Y)  # per-target alphas, all training rows
    np.testing.assert_allclose(ours.predict(Xte), refit.predict(Xte), atol=1e-4, rtol=0)


def test_kfold_shuffled_and_without_intercept():
    X, Y, Xte, _ = make_data(48, 90, seed=13)
    perm = np.random.default_rng(42).permutation(len(X))
    folds = []
    for val in np.array_split(perm, 4):
        folds.append((np.setdiff1d(np.arange(len(X)), val), np.sort(val)))
    want = brute_force_kfold(X, Y, ALPHAS, folds, "mse")
    ours = RidgeCV(ALPHAS, cv=4, shuffle=True, random_state=42).fit(X, Y)
    np.testing.assert_allclose(ours.cv_scores_, want, rtol=1e-7)
    contiguous = RidgeCV(ALPHAS, cv=4).fit(X, Y)
    assert not np.allclose(contiguous.cv_scores_, want)

    want0 = brute_force_kfold(X, Y, ALPHAS, list(KFold(3).split(X)), "mse", fit_intercept=False)
    ours0 = RidgeCV(ALPHAS, cv=3, fit_intercept=False).fit(X, Y)
    np.testing.assert_allclose(ours0.cv_scores_, want0, rtol=1e-7)
    refit = Ridge(alpha=ours0.alpha_, fit_intercept=False).fit(X, Y)
    np.testing.assert_allclose(ours0.predict(Xte), refit.predict(Xte), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- #
# Planted signal, training-only statistics
# --------------------------------------------------------------------------- #
def _r2(Y, P):
    return 1 - ((Y - P) ** 2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0)


@pytest.mark.parametrize("cv", [5, "loo"])
def test_planted_signal_recovered_and_shuffled_control_near_zero(cv):
    rng = np.random.default_rng(21)
    n_tr, n_te, p, t = 300, 200, 120, 8
    X = rng.standard_normal((n_tr + n_te, p)).astype(np.float32)
    W = (rng.standard_normal((p, t)) * (rng.random((p, t)) < 0.1)).astype(np.float32)
    signal = X @ W
    Y = signal + 0.3 * signal.std(0) * rng.standard_normal((n_tr + n_te, t))  # R^2 ~ 0.9
    Xtr, Xte, Ytr, Yte = X[:n_tr], X[n_tr:], Y[:n_tr], Y[n_tr:]
    alphas = np.logspace(-1, 5, 7)
    r2 = _r2(Yte, RidgeCV(alphas, cv=cv).fit(Xtr, Ytr).predict(Xte))
    assert r2.min() > 0.75 and np.median(r2) > 0.8, r2
    control = RidgeCV(alphas, cv=cv).fit(Xtr, Ytr[rng.permutation(n_tr)])
    r2c = _r2(Yte, control.predict(Xte))
    assert abs(r2c.mean()) < 0.05 and r2c.max() < 0.05, r2c


def test_intercept_uses_training_means_only():
    X, Y, Xte, _ = make_data(60, 100, seed=17)
    Xte = Xte + 1e3  # test rows far from the training mean
    model = RidgeCV(ALPHAS, cv="loo").fit(X, Y)
    by_hand = (Xte - X.mean(0)) @ model.coef_ + Y.mean(0)
    np.testing.assert_allclose(model.predict(Xte), by_hand, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(model.intercept_, Y.mean(0) - X.mean(0) @ model.coef_, rtol=1e-9)
    np.testing.assert_allclose(model.x_mean_, X.mean(0), rtol=1e-12)


def test_one_dimensional_target_and_determinism():
    X, Y, Xte, _ = make_data(40, 60, seed=19)
    a = RidgeCV(ALPHAS, cv=4).fit(X, Y[:, 2])
    b = RidgeCV(ALPHAS, cv=4).fit(X, Y[:, 2])
    assert a.coef_.shape == (60, 1) and a.predict(Xte).shape == (len(Xte), 1)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.predict(Xte), b.predict(Xte))
    full = RidgeCV(ALPHAS, cv=4).fit(X, Y)
    np.testing.assert_allclose(full.predict(Xte)[:, 2:3], a.predict(Xte), rtol=1e-6, atol=1e-5)


def test_gram_matches_matmul_across_blocks():
    A = torch.randn(600, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    K = _gram(A)
    torch.testing.assert_close(K, A @ A.T, rtol=1e-12, atol=1e-10)
    assert torch.equal(K, K.T)


def test_fit_does_not_modify_inputs():
    X, Y, _, _ = make_data(30, 50)
    X0, Y0 = X.copy(), Y.copy()
    RidgeCV(ALPHAS, cv="loo").fit(X, Y)
    RidgeCV(ALPHAS, cv=3, dtype="float32").fit(X.astype(np.float32), Y)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(Y, Y0)


# --------------------------------------------------------------------------- #
# Persistence
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_save_load_round_trip(tmp_path, dtype):
    X, Y, Xte, _ = make_data(50, 80, seed=23)
    model = RidgeCV(ALPHAS, cv=3, scoring="r2", shuffle=True, random_state=7,
                    dtype=dtype).fit(X, Y)
    path = tmp_path / "ridge.safetensors"
    model.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ridge.safetensors"]
    loaded = RidgeCV.load(path)
    np.testing.assert_array_equal(loaded.predict(Xte), model.predict(Xte))
    for attr in ("alpha_", "coef_", "intercept_", "cv_scores_"):
        np.testing.assert_array_equal(getattr(loaded, attr), getattr(model, attr))
    assert loaded.settings() == model.settings()
    assert (loaded.cv, loaded.scoring, loaded.shuffle, loaded.random_state) == (3, "r2", True, 7)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert json.loads(meta["alphas"]) == list(ALPHAS) and meta["dtype"] == dtype
    state = model.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    again = RidgeCV.from_state_dict(state)
    np.testing.assert_array_equal(again.predict(Xte), model.predict(Xte))


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(InputError, match="nope.safetensors"):
        RidgeCV.load(missing)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "something else"})
    with pytest.raises(InputError, match="other.safetensors"):
        RidgeCV.load(other)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="garbage.safetensors"):
        RidgeCV.load(garbage)


# --------------------------------------------------------------------------- #
# Argument and data checks
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("kwargs", [
    {"alphas": ()}, {"alphas": (1.0, -1.0)}, {"alphas": (np.nan,)}, {"cv": 1}, {"cv": "kfold"},
    {"cv": True}, {"scoring": "mae"}, {"dtype": "float16"}, {"device": "nodevice"},
])
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        RidgeCV(**kwargs)


def test_bad_data_raises_input_error():
    X, Y, Xte, _ = make_data(30, 40)
    bad = X.copy()
    bad[3, 7] = np.nan
    with pytest.raises(InputError, match=r"RidgeCV.fit\(X\).*1 NaN"):
        RidgeCV(ALPHAS).fit(bad, Y)
    with pytest.raises(InputError, match=r"RidgeCV.fit\(Y\).*30 rows"):
        RidgeCV(ALPHAS).fit(X, Y[:-1])
    with pytest.raises(InputError, match="at least 5 rows"):
        RidgeCV(ALPHAS, cv=5).fit(X[:4], Y[:4])
    with pytest.raises(ValueError, match="not fitted"):
        RidgeCV(ALPHAS).predict(Xte)
    model = RidgeCV(ALPHAS, cv="loo").fit(X, Y)
    with pytest.raises(InputError, match=r"RidgeCV.predict\(X\).*40 columns"):
        model.predict(Xte[:, :-1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cv", ["loo", 3])
def test_cuda_matches_cpu(cv):
    X, Y, Xte, _ = make_data(70, 150, seed=29)
    cpu = RidgeCV(ALPHAS, cv=cv).fit(X, Y)
    gpu = RidgeCV(ALPHAS, cv=cv, device="cuda").fit(X, Y)
    np.testing.assert_array_equal(gpu.alpha_, cpu.alpha_)
    np.testing.assert_allclose(gpu.predict(Xte), cpu.predict(Xte), atol=1e-5, rtol=1e-6)
