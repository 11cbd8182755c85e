"""Trains a zoo of small fraud classifiers whose ONNX graphs have different
output shapes, and writes for each one models/zoo/<name>.onnx, its card
models/zoo/<name>.card.json and its fixture models/fixtures/<name>.expected.json.

    python3.11 -m venv .local/train-venv
    .local/train-venv/bin/pip install -r models/requirements-train.txt
    .local/train-venv/bin/python models/zoo.py

The zoo (all take one float32 input "X" of shape [N, 24], features in the
order of features.FEATURES):
    logreg_zipmap  StandardScaler + LogisticRegression, skl2onnx defaults:
                   output_label int64 [N], output_probability seq(map(int64, float))
    logreg_tensor  the same fitted model with zipmap off: label, probabilities float [N, 2]
    lightgbm       LGBMClassifier via onnxmltools: label, probabilities seq(map(int64, float))
    xgboost        XGBClassifier via onnxmltools: label, probabilities float [N, 2]
    gbr_score      GradientBoostingRegressor fit to the 0/1 label: variable float [N, 1]
                   (a raw regression score: it can fall slightly outside [0, 1])

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
import sklearn
import skl2onnx
import xgboost
from onnxmltools.convert.common.data_types import FloatTensorType
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

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


def positive_scores(sess, output, x) -> np.ndarray:
    """The positive-class score that the card's output block describes."""
    out = sess.run([output["name"]], {"X": x})[0]
    if output["kind"] == "zipmap":
        return np.array([row[output["positive_class"]] for row in out], dtype=np.float32)
    if output["kind"] == "probabilities":
        return out[:, output["positive_class_column"]]
    return out[:, 0]


def publish(name, onx, output, architecture, library, split, reference=None):
    """Writes the .onnx, its card and its fixture; checks and prints the model."""
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
    assert [(i.name, i.type, i.shape[1]) for i in sess.get_inputs()] == [("X", "tensor(float)", len(FEATURES))]
    scores = positive_scores(sess, output, x_test)
    if reference is not None:  # the converted graph must score like the trained model
        diff = float(np.abs(scores - reference(x_test)).max())
        assert diff < 1e-4, f"{name}: onnx differs from the trained model by {diff}"
    auc = float(roc_auc_score(y_test, scores))
    card = {
        "name": name,
        "version": VERSION,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "input": {"name": "X", "dtype": "float32", "shape": [-1, len(FEATURES)]},
        "output": output,
        "features": [{"name": n, "field": f, "type": t} for n, f, t in FEATURES],
        "threshold": 0.5,
        "training": {"script": "models/zoo.py", **meta, "architecture": architecture, "library": library},
        "evaluation": {"holdout_rows": len(y_test), "holdout_auc": round(auc, 4)},
    }
    card_path = ZOO / f"{name}.card.json"
    card_path.write_text(json.dumps(card, indent=2) + "\n")

    fx, events = fixture_events()
    fscores = positive_scores(sess, output, fx)
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


def main() -> None:
    split = data()
    print(f"{ROWS} rows, seed {SEED}, fraud rate {split[4]['fraud_rate']:.4f}, onnxruntime {ort.__version__}")
    logistic_regressions(split)
    light_gbm(split)
    xg_boost(split)
    gbr_score(split)


if __name__ == "__main__":
    main()
