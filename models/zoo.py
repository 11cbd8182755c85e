"""Trains a zoo of small fraud classifiers whose ONNX graphs have different
output shapes, and writes for each one models/zoo/<name>.onnx, its card
models/zoo/<name>.card.json and its fixture models/fixtures/<name>.expected.json.

    python3.11 -m venv .local/train-venv
    .local/train-venv/bin/pip install -r models/requirements-train.txt
    .local/train-venv/bin/python models/zoo.py

The zoo (all but country_pipeline take one float32 input "X" of shape [N, 24],
features in the order of features.FEATURES):
    logreg_zipmap  StandardScaler + LogisticRegression, skl2onnx defaults:
                   output_label int64 [N], output_probability seq(map(int64, float))
    logreg_tensor  the same fitted model with zipmap off: label, probabilities float [N, 2]
    lightgbm       LGBMClassifier via onnxmltools: label, probabilities seq(map(int64, float))
    xgboost        XGBClassifier via onnxmltools: label, probabilities float [N, 2]
    gbr_score      GradientBoostingRegressor fit to the 0/1 label: variable float [N, 1]
                   (a raw regression score: it can fall slightly outside [0, 1])
    country_pipeline  Pipeline(ColumnTransformer(OneHotEncoder on the string feature
                   merchant_country, StandardScaler on the 24), LogisticRegression):
                   one input per feature, named like it (24 float [N, 1] and
                   merchant_country string [N, 1]); label, probabilities float [N, 2].
                   merchant_country is drawn here, not in features.py; a missing
                   country is fed as "" (the processor feeds a null string as "").

Deterministic (fixed seeds, single-threaded training): the same versions give
the same files. The fixture scores are what onnxruntime (pinned to the version
the Rust side loads) computes. The files are committed; nothing trains during set-up.
"""
import hashlib
import json
import os
import pathlib

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before sklearn/lightgbm load OpenMP

import lightgbm
import numpy as np
import onnxmltools
import onnxruntime as ort
import pandas as pd
import sklearn
import skl2onnx
import xgboost
from onnxmltools.convert.common.data_types import FloatTensorType
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType as SklFloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from features import FEATURES, draw, matrix

HERE = pathlib.Path(__file__).resolve().parent
ZOO, FIXTURES = HERE / "zoo", HERE / "fixtures"
SEED = 20261125
ROWS = 60_000
FIXTURE_ROWS = 64
VERSION = "1.0.0"
OPSET = {"": 17, "ai.onnx.ml": 3}  # skl2onnx models
MLTOOLS_OPSET = 15  # onnxmltools takes one int, capped at 15 by onnxconverter-common
INITIAL_TYPES = [("X", FloatTensorType([None, len(FEATURES)]))]


def data():
    cols, y = draw(np.random.default_rng(SEED), ROWS)
    x = matrix(cols)
    split = int(ROWS * 0.8)
    meta = {"seed": SEED, "rows": ROWS, "fraud_rate": float(y.mean()),
            "data_sha256": hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()}
    return x[:split], y[:split], x[split:], y[split:], meta


def fixture_events():
    """The rows make_fixtures.py uses: rng 7, every 8th row made extreme."""
    cols, _ = draw(np.random.default_rng(7), FIXTURE_ROWS)
    for i in range(0, FIXTURE_ROWS, 8):
        cols["device_risk"][i] = 0.95
        cols["ip_risk"][i] = 0.9
        cols["failed_attempts_24h"][i] = 4
    events = []
    for i in range(FIXTURE_ROWS):
        event = {"event_id": f"fixture-{i:03d}", "card_id": f"card-{i % 9}", "event_time": 1_790_000_000_000 + i}
        for name, field, kind in FEATURES:
            v = cols[name][i]
            event[field] = bool(v) if kind == "boolean" else (float(v) if kind == "double" else int(v))
        events.append(event)
    return matrix(cols), events


def single_input(x):
    """The feed of the one-input models: the [N, 24] float32 matrix as "X"."""
    return {"X": x}


def positive_scores(sess, output, feed) -> np.ndarray:
    """The positive-class score that the card's output block describes."""
    out = sess.run([output["name"]], feed)[0]
    if output["kind"] == "zipmap":
        return np.array([row[output["positive_class"]] for row in out], dtype=np.float32)
    if output["kind"] == "probabilities":
        return out[:, output["positive_class_column"]]
    return out[:, 0]


def publish(name, onx, output, architecture, library, split, reference=None, *, feed=single_input,
            features=FEATURES, fixture=fixture_events):
    """Writes the .onnx, its card and its fixture; checks and prints the model.

    feed turns split's holdout (and fixture()'s table) into the session's inputs. A model
    fed by single_input gets a card "input" block (one float32 [N, len(features)] "X");
    any other gets "inputs", one block per graph input in the graph's order, each
    naming the feature it carries (the inputs are named like the features).
    """
    _, _, x_test, y_test, meta = split
    ZOO.mkdir(exist_ok=True)
    FIXTURES.mkdir(exist_ok=True)
    # Byte-stable files: onnxmltools names the graph with a random uuid, and the order of
    # opset_import follows Python's per-process string hashing.
    onx.graph.name = name
    opsets = sorted(((o.domain, o.version) for o in onx.opset_import))
    del onx.opset_import[:]
    for domain, version in opsets:
        onx.opset_import.add(domain=domain, version=version)
    path = ZOO / f"{name}.onnx"
    path.write_bytes(onx.SerializeToString())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if feed is single_input:
        assert [(i.name, i.type, i.shape[1]) for i in sess.get_inputs()] == [("X", "tensor(float)", len(features))]
        inputs = {"input": {"name": "X", "dtype": "float32", "shape": [-1, len(features)]}}
    else:
        dtypes = {"tensor(float)": "float32", "tensor(string)": "string"}
        assert [i.name for i in sess.get_inputs()] == [n for n, _, _ in features], "one input per feature"
        assert all(i.shape[1] == 1 and i.type in dtypes for i in sess.get_inputs())
        inputs = {"inputs": [{"name": i.name, "dtype": dtypes[i.type], "shape": [-1, 1], "features": [i.name]}
                             for i in sess.get_inputs()]}
    scores = positive_scores(sess, output, feed(x_test))
    if reference is not None:  # the converted graph must score like the trained model
        diff = float(np.abs(scores - reference(x_test)).max())
        assert diff < 1e-4, f"{name}: onnx differs from the trained model by {diff}"
    auc = float(roc_auc_score(y_test, scores))
    card = {
        "name": name,
        "version": VERSION,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        **inputs,
        "output": output,
        "features": [{"name": n, "field": f, "type": t} for n, f, t in features],
        "threshold": 0.5,
        "training": {"script": "models/zoo.py", **meta, "architecture": architecture, "library": library},
        "evaluation": {"holdout_rows": len(y_test), "holdout_auc": round(auc, 4)},
    }
    card_path = ZOO / f"{name}.card.json"
    card_path.write_text(json.dumps(card, indent=2) + "\n")

    fx, events = fixture()
    fscores = positive_scores(sess, output, feed(fx))
    if reference is not None:
        diff = float(np.abs(fscores - reference(fx)).max())
        assert diff < 1e-4, f"{name}: onnx differs from the trained model on the fixture by {diff}"
    assert len(set(fscores.tolist())) > 1, f"{name}: fixture scores are all equal"
    # The every-8th rows are far out in the risk features. Trees do not extrapolate past
    # the training range, so only ask that they score well above the ordinary rows.
    extreme, ordinary = fscores[::8], np.delete(fscores, np.s_[::8])
    assert np.median(extreme) > 5 * np.median(ordinary), f"{name}: extreme rows do not stand out"
    fixture = {"model_sha256": card["sha256"], "onnxruntime": ort.__version__,
               "card": f"models/zoo/{card_path.name}",
               "rows": [{"event": e, "score": float(s)} for e, s in zip(events, fscores)]}
    (FIXTURES / f"{name}.expected.json").write_text(json.dumps(fixture, indent=1) + "\n")

    outputs = ", ".join(f"{o.name}: {o.type}" for o in sess.get_outputs())
    print(f"{name:14s} {path.stat().st_size:7d} B  AUC {auc:.4f}  fixture {fscores.min():.4f}..{fscores.max():.4f}"
          f"  (extreme rows {extreme.min():.4f}..{extreme.max():.4f}, ordinary median {np.median(ordinary):.4f})"
          f"  outputs [{outputs}]")


def logistic_regressions(split):
    x_train, y_train = split[0], split[1]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(x_train, y_train)
    ref = lambda x: model.predict_proba(x)[:, 1]
    arch, lib = "StandardScaler -> LogisticRegression (lbfgs, L2, C=1)", f"scikit-learn {sklearn.__version__}"
    onx = to_onnx(model, x_train[:1], target_opset=OPSET)
    publish("logreg_zipmap", onx, {"name": "output_probability", "kind": "zipmap", "positive_class": 1},
            arch, f"{lib}, skl2onnx {skl2onnx.__version__} (ZipMap on)", split, ref)
    onx = to_onnx(model, x_train[:1], target_opset=OPSET, options={"zipmap": False})
    publish("logreg_tensor", onx, {"name": "probabilities", "kind": "probabilities", "dtype": "float32",
                                   "positive_class_column": 1},
            arch, f"{lib}, skl2onnx {skl2onnx.__version__} (zipmap off)", split, ref)


def light_gbm(split):
    x_train, y_train = split[0], split[1]
    model = lightgbm.LGBMClassifier(n_estimators=50, num_leaves=15, learning_rate=0.1, random_state=SEED,
                                    n_jobs=1, deterministic=True, force_col_wise=True, verbose=-1)
    model.fit(x_train, y_train)
    onx = onnxmltools.convert_lightgbm(model, initial_types=INITIAL_TYPES, target_opset=MLTOOLS_OPSET)
    publish("lightgbm", onx, {"name": "probabilities", "kind": "zipmap", "positive_class": 1},
            "LightGBM gbdt, 50 trees, 15 leaves, lr 0.1",
            f"lightgbm {lightgbm.__version__}, onnxmltools {onnxmltools.__version__}", split,
            lambda x: model.predict_proba(x)[:, 1])


def xg_boost(split):
    x_train, y_train = split[0], split[1]
    model = xgboost.XGBClassifier(n_estimators=50, max_depth=4, learning_rate=0.1, random_state=SEED,
                                  n_jobs=1, tree_method="hist")
    model.fit(x_train, y_train)
    onx = onnxmltools.convert_xgboost(model, initial_types=INITIAL_TYPES, target_opset=MLTOOLS_OPSET)
    publish("xgboost", onx, {"name": "probabilities", "kind": "probabilities", "dtype": "float32",
                             "positive_class_column": 1},
            "XGBoost gbtree (hist), 50 trees, depth 4, lr 0.1",
            f"xgboost {xgboost.__version__}, onnxmltools {onnxmltools.__version__}", split,
            lambda x: model.predict_proba(x)[:, 1])


def gbr_score(split):
    x_train, y_train = split[0], split[1]
    # Not HistGradientBoostingRegressor: skl2onnx 1.20.0 cannot export it with onnx 1.23.2
    # (its nodes_missing_value_tracks_true attribute is rejected as booleans).
    model = GradientBoostingRegressor(n_estimators=50, max_depth=4, learning_rate=0.1, random_state=SEED)
    model.fit(x_train, y_train.astype(np.float32))
    onx = to_onnx(model, x_train[:1], target_opset=OPSET)
    publish("gbr_score", onx, {"name": "variable", "kind": "score", "dtype": "float32"},
            "GradientBoostingRegressor (squared error) on the 0/1 label, 50 trees, depth 4, lr 0.1",
            f"scikit-learn {sklearn.__version__}, skl2onnx {skl2onnx.__version__}", split,
            lambda x: model.predict(x).astype(np.float32))


# country_pipeline: a string feature, drawn here (features.py is shared with train.py and
# make_fixtures.py and stays as it is). ISO 3166 alpha-2 codes with rough card-volume weights,
# and the chance that a country adds a fraud on top of features.draw's labels.
COUNTRIES = {  # code: (weight, extra fraud probability for a non-fraud row)
    "US": (0.30, 0.0), "GB": (0.10, 0.0), "DE": (0.09, 0.0), "FR": (0.08, 0.0),
    "CA": (0.06, 0.0), "NL": (0.04, 0.0), "ES": (0.05, 0.0), "IT": (0.05, 0.0),
    "BR": (0.05, 0.03), "MX": (0.04, 0.02), "IN": (0.05, 0.02), "JP": (0.04, 0.0),
    "CN": (0.03, 0.015), "NG": (0.01, 0.08), "RU": (0.01, 0.05),
}
COUNTRY_MISSING = 0.03  # share of rows with no country (null): fed as ""
COUNTRY_MISSING_FRAUD = 0.01  # a missing country is a little suspicious too
COUNTRY_FEATURE = ("merchant_country", "merchant_country", "string")
# Fixture countries (cycled): every code, "ZZ" (not in training: an all-zero one-hot) and None.
FIXTURE_NULLS = (3, 16, 29, 42, 55)  # JSON null, scored with "" (16 is an extreme row)
FIXTURE_UNKNOWN = (7, 24, 50)  # "ZZ" (24 is an extreme row)


def country_frame(x, countries):
    """The pipeline's training/scoring table: the 24 float32 columns and merchant_country,
    a null country as "" (what the processor feeds for a null string)."""
    table = {name: x[:, j] for j, (name, _, _) in enumerate(FEATURES)}
    table["merchant_country"] = pd.Series(["" if c is None else c for c in countries], dtype=object)
    return pd.DataFrame(table)


def per_feature_feed(frame):
    """One [N, 1] input per feature: float32 for the 24, a numpy object array of str for the country."""
    feed = {name: frame[name].to_numpy(dtype=np.float32).reshape(-1, 1) for name, _, _ in FEATURES}
    feed["merchant_country"] = frame["merchant_country"].to_numpy(dtype=object).reshape(-1, 1)
    return feed


def country_data():
    """features.draw with the zoo's seed, plus merchant_country from an rng of its own (so the
    24 columns are the other models' own) and labels bumped by country."""
    cols, y = draw(np.random.default_rng(SEED), ROWS)
    x = matrix(cols)
    rng = np.random.default_rng([SEED, 3166])
    codes = list(COUNTRIES)
    weights = np.array([COUNTRIES[c][0] for c in codes])
    drawn = rng.choice(len(codes), size=ROWS, p=weights / weights.sum())
    missing = rng.random(ROWS) < COUNTRY_MISSING
    countries = [None if m else codes[k] for k, m in zip(drawn, missing)]
    bump = np.where(missing, COUNTRY_MISSING_FRAUD, np.array([COUNTRIES[c][1] for c in codes])[drawn])
    y = np.where((y == 0) & (rng.random(ROWS) < bump), 1, y).astype(np.int64)
    frame = country_frame(x, countries)
    split = int(ROWS * 0.8)
    country_bytes = "\n".join("" if c is None else c for c in countries).encode()
    meta = {"seed": SEED, "rows": ROWS, "fraud_rate": float(y.mean()),
            "data_sha256": hashlib.sha256(x.tobytes() + country_bytes + y.tobytes()).hexdigest(),
            "merchant_country": {"draw": "numpy default_rng([seed, 3166]) after features.draw",
                                 "missing_rate": COUNTRY_MISSING, "weights": {c: w for c, (w, _) in COUNTRIES.items()},
                                 "fraud_bump": {**{c: b for c, (_, b) in COUNTRIES.items() if b}, "": COUNTRY_MISSING_FRAUD}}}
    return frame.iloc[:split], y[:split], frame.iloc[split:].reset_index(drop=True), y[split:], meta


def country_fixture():
    """fixture_events' rows and events, each with a merchant_country (None for JSON null)."""
    fx, events = fixture_events()
    codes = list(COUNTRIES)
    countries = [None if i in FIXTURE_NULLS else "ZZ" if i in FIXTURE_UNKNOWN else codes[i % len(codes)]
                 for i in range(FIXTURE_ROWS)]
    for event, country in zip(events, countries):
        event["merchant_country"] = country
    return country_frame(fx, countries), events


def country_pipeline():
    split = country_data()
    x_train, y_train, x_test = split[0], split[1], split[2]
    numeric = [name for name, _, _ in FEATURES]
    model = Pipeline([
        ("features", ColumnTransformer([
            ("country", OneHotEncoder(handle_unknown="ignore"), ["merchant_country"]),
            ("num", StandardScaler(), numeric),
        ])),
        ("classifier", LogisticRegression(max_iter=1000)),
    ])
    model.fit(x_train, y_train)
    print(f"country_pipeline: fraud rate with the country bump {split[4]['fraud_rate']:.4f}, "
          f"categories {model.named_steps['features'].named_transformers_['country'].categories_[0].tolist()}")
    initial_types = [(name, SklFloatTensorType([None, 1])) for name in numeric]
    initial_types.append(("merchant_country", StringTensorType([None, 1])))
    onx = to_onnx(model, initial_types=initial_types, target_opset=OPSET, options={"zipmap": False})
    publish("country_pipeline", onx, {"name": "probabilities", "kind": "probabilities", "dtype": "float32",
                                      "positive_class_column": 1},
            "ColumnTransformer(OneHotEncoder(handle_unknown=ignore) on merchant_country ('' for a null "
            "country), StandardScaler on the 24 numeric features) -> LogisticRegression (lbfgs, L2, C=1); "
            "one graph input per feature",
            f"scikit-learn {sklearn.__version__}, skl2onnx {skl2onnx.__version__} (zipmap off), "
            f"pandas {pd.__version__}", split, lambda frame: model.predict_proba(frame)[:, 1],
            feed=per_feature_feed, features=FEATURES + [COUNTRY_FEATURE], fixture=country_fixture)


def main() -> None:
    split = data()
    print(f"{ROWS} rows, seed {SEED}, fraud rate {split[4]['fraud_rate']:.4f}, onnxruntime {ort.__version__}")
    logistic_regressions(split)
    light_gbm(split)
    xg_boost(split)
    gbr_score(split)
    country_pipeline()


if __name__ == "__main__":
    main()
