"""Trains the default model fraud_gbm (LightGBM) on the realistic world of world.py,
and writes models/fraud_gbm.onnx, its card models/fraud_gbm.card.json and its
fixture models/fixtures/fraud_gbm.expected.json.

    python3.11 -m venv .local/train-venv
    .local/train-venv/bin/pip install -r models/requirements-train.txt
    .local/train-venv/bin/python models/train_default.py

The graph takes one float32 input "X" [N, 24], the features in the order of
features.FEATURES (the MLP's: the same reader schema serves both), and gives
"label" int64 [N] and "probabilities" float32 [N, 2] (zipmap off); the card
reads column 1. The card's threshold is the one (on a 0.01 grid) with the best
F1 on the holdout among those that flag 0.5..2 % of its transactions; its
holdout precision, recall and flag rate are in the card's "evaluation".

Deterministic (fixed seeds, single-threaded training, the graph's name and
opset order fixed): the same versions give the same files. The fixture scores
are what onnxruntime (pinned to the version the Rust side loads) computes.
The files are committed; nothing trains during set-up.
"""
import hashlib
import json
import os
import pathlib

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before lightgbm loads OpenMP

import lightgbm
import numpy as np
import onnx
import onnxmltools
import onnxruntime as ort
from onnxmltools.convert.common.data_types import FloatTensorType
from sklearn.metrics import roc_auc_score

import world
from features import FEATURES, matrix

HERE = pathlib.Path(__file__).resolve().parent
NAME, VERSION = "fraud_gbm", "1.0.0"
SEED = 20261126
ROWS = 200_000
FIXTURE_ROWS = 64
OPSET = 15  # onnxmltools takes one int, capped at 15 by onnxconverter-common
FLAG_RATES = (0.005, 0.02)  # the holdout share of flagged transactions a threshold may give
PARAMS = dict(n_estimators=150, num_leaves=31, learning_rate=0.05, min_child_samples=40,
              reg_lambda=1.0, random_state=SEED, n_jobs=1, deterministic=True, force_col_wise=True,
              verbose=-1)
ARCHITECTURE = ("LightGBM gbdt, 150 trees, 31 leaves, lr 0.05, min_child_samples 40, lambda_l2 1; "
                "binary logloss; zipmap off")


def data():
    cols, y, latent = world.draw(np.random.default_rng(SEED), ROWS)
    print(world.describe(cols, y, latent))
    x = matrix(cols)
    split = int(ROWS * 0.8)
    meta = {"seed": SEED, "rows": ROWS, "fraud_rate": float(y.mean()),
            "data_sha256": hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()}
    return x[:split], y[:split], x[split:], y[split:], meta


def fixture_events():
    """64 events of the world (seed 7); every 8th is an attack (seed 8), so the fixture
    has high scores too. Each event has exactly schema v1's fields."""
    cols, _, _ = world.draw(np.random.default_rng(7), FIXTURE_ROWS)
    attacks, _, _ = world.draw(np.random.default_rng(8), FIXTURE_ROWS // 8, attack_rate=1.0)
    for name in cols:
        cols[name] = np.array(cols[name])
        cols[name][::8] = attacks[name]
    events = []
    for i in range(FIXTURE_ROWS):
        event = {"event_id": f"fixture-{i:03d}", "card_id": f"card-{i % 9}", "event_time": 1_790_000_000_000 + i}
        for name, field, kind in FEATURES:
            v = cols[name][i]
            event[field] = bool(v) if kind == "boolean" else (float(v) if kind == "double" else int(v))
        events.append(event)
    return matrix(cols), events


def exact_thresholds(onx, model):
    """Makes the graph's float32 split thresholds route every float32 input as LightGBM does.

    LightGBM splits on double thresholds (x <= t); the converter rounds each t to the nearest
    float32, which can round it up onto an input value (x = float32(t) > t): that row then goes
    left in the graph and right in LightGBM (seen: 2 of 40 000 holdout rows, 1e-3 apart). The
    largest float32 <= t routes every float32 x exactly as t does. The graph's trees are walked
    beside LightGBM's own dump (true branch = left child), checking that each node matches.
    Returns how many thresholds moved.
    """
    (node,) = [n for n in onx.graph.node if n.op_type == "TreeEnsembleClassifier"]
    attrs = {a.name: a for a in node.attribute}
    index = {(t, i): k for k, (t, i) in enumerate(zip(attrs["nodes_treeids"].ints, attrs["nodes_nodeids"].ints))}
    values = attrs["nodes_values"].floats
    true_ids, false_ids = attrs["nodes_truenodeids"].ints, attrs["nodes_falsenodeids"].ints
    modes, features = attrs["nodes_modes"].strings, attrs["nodes_featureids"].ints
    moved = 0

    def walk(tree, node_id, split):
        nonlocal moved
        k = index[(tree, node_id)]
        if "split_feature" not in split:
            assert modes[k] == b"LEAF", (tree, node_id)
            return
        t = float(split["threshold"])
        assert modes[k] == b"BRANCH_LEQ" and split["decision_type"] == "<=", (tree, node_id, modes[k])
        assert features[k] == split["split_feature"] and values[k] == np.float32(t), (tree, node_id)
        if float(np.float32(t)) > t:
            values[k] = float(np.nextafter(np.float32(t), np.float32(-np.inf)))
            moved += 1
        walk(tree, true_ids[k], split["left_child"])
        walk(tree, false_ids[k], split["right_child"])

    for tree, info in enumerate(model.booster_.dump_model()["tree_info"]):
        walk(tree, 0, info["tree_structure"])
    return moved


def convert(model):
    onx = onnxmltools.convert_lightgbm(model, initial_types=[("X", FloatTensorType([None, len(FEATURES)]))],
                                       target_opset=OPSET, zipmap=False)
    moved = exact_thresholds(onx, model)
    print(f"{moved} float32 thresholds moved down to route like LightGBM's doubles")
    # Byte-stable file: onnxmltools names the graph with a random uuid, and the order of
    # opset_import follows Python's per-process string hashing.
    onx.graph.name = NAME
    opsets = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in opsets:
        onx.opset_import.add(domain=domain, version=version)
    # The converter declares "label" as [1]; it is [N] (onnxruntime warns on every run that
    # fetches it). Leave its length unknown, like the probabilities' rows.
    (label,) = [o for o in onx.graph.output if o.name == "label"]
    label.type.tensor_type.shape.dim[0].Clear()
    onnx.checker.check_model(onx)
    return onx


def at_threshold(scores, y, threshold):
    flagged = scores >= threshold
    hits = int((flagged & (y == 1)).sum())
    return {"threshold": threshold, "flag_rate": float(flagged.mean()),
            "precision": hits / max(int(flagged.sum()), 1), "recall": hits / max(int(y.sum()), 1)}


def choose_threshold(scores, y):
    """The 0.01-grid threshold with the best F1 among those flagging FLAG_RATES of the rows."""
    best = None
    for t in np.round(np.arange(0.01, 1.0, 0.01), 2):
        m = at_threshold(scores, y, float(t))
        if not FLAG_RATES[0] <= m["flag_rate"] <= FLAG_RATES[1]:
            continue
        f1 = 2 * m["precision"] * m["recall"] / max(m["precision"] + m["recall"], 1e-12)
        if best is None or f1 > best[0]:
            best = (f1, m)
    assert best is not None, "no threshold flags a believable share of the holdout"
    return best[1]


def main() -> None:
    print(f"seed {SEED}, onnxruntime {ort.__version__}")
    x_train, y_train, x_test, y_test, meta = data()
    model = lightgbm.LGBMClassifier(**PARAMS)
    model.fit(x_train, y_train)

    path = HERE / f"{NAME}.onnx"
    path.write_bytes(convert(model).SerializeToString())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in sess.get_inputs()] == [("X", "tensor(float)", [None, len(FEATURES)])], \
        sess.get_inputs()
    outputs = [(o.name, o.type, o.shape) for o in sess.get_outputs()]
    assert outputs == [("label", "tensor(int64)", [None]), ("probabilities", "tensor(float)", [None, 2])], outputs
    scores = sess.run(["probabilities"], {"X": x_test})[0][:, 1]
    diff = float(np.abs(scores - model.predict_proba(x_test)[:, 1]).max())
    assert diff < 1e-5, f"the onnx graph differs from the trained model by {diff}"
    auc = float(roc_auc_score(y_test, scores))
    chosen = choose_threshold(scores, y_test)
    assert path.stat().st_size < 1_500_000, path.stat().st_size

    card = {
        "name": NAME,
        "version": VERSION,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "input": {"name": "X", "dtype": "float32", "shape": [-1, len(FEATURES)]},
        "output": {"name": "probabilities", "kind": "probabilities", "dtype": "float32",
                   "positive_class_column": 1},
        "features": [{"name": n, "field": f, "type": t} for n, f, t in FEATURES],
        "threshold": chosen["threshold"],
        "training": {
            "script": "models/train_default.py",
            "data": "models/world.py",
            **meta,
            "architecture": ARCHITECTURE,
            "library": f"lightgbm {lightgbm.__version__}, onnxmltools {onnxmltools.__version__}, "
                       f"onnx {onnx.__version__}, numpy {np.__version__}",
        },
        "evaluation": {
            "holdout_rows": len(y_test),
            "holdout_fraud_rate": round(float(y_test.mean()), 5),
            "holdout_auc": round(auc, 4),
            "holdout_flag_rate": round(chosen["flag_rate"], 5),
            "holdout_precision": round(chosen["precision"], 4),
            "holdout_recall": round(chosen["recall"], 4),
        },
    }
    card_path = HERE / f"{NAME}.card.json"
    card_path.write_text(json.dumps(card, indent=2) + "\n")

    fx, events = fixture_events()
    fscores = sess.run(["probabilities"], {"X": fx})[0][:, 1]
    attack, ordinary = fscores[::8], np.delete(fscores, np.s_[::8])
    assert np.median(attack) > 5 * np.median(ordinary), "the fixture's attack rows do not stand out"
    fixture = {"model_sha256": card["sha256"], "onnxruntime": ort.__version__,
               "card": f"models/{card_path.name}",
               "rows": [{"event": e, "score": float(s)} for e, s in zip(events, fscores)]}
    fixture_path = HERE / "fixtures" / f"{NAME}.expected.json"
    fixture_path.write_text(json.dumps(fixture, indent=1) + "\n")

    print(f"{path.name}: {path.stat().st_size} B, sha256 {card['sha256']}, onnx vs lightgbm max diff {diff:.2e}")
    print("inputs:", [(i.name, i.type, i.shape) for i in sess.get_inputs()])
    print("outputs:", [(o.name, o.type, o.shape) for o in sess.get_outputs()])
    print(f"holdout AUC {auc:.4f}; threshold {chosen['threshold']}: flag rate {chosen['flag_rate']:.4f}, "
          f"precision {chosen['precision']:.3f}, recall {chosen['recall']:.3f}")
    print(f"fixture: attack rows {attack.min():.4f}..{attack.max():.4f}, ordinary median {np.median(ordinary):.4f}, "
          f"flagged {int((fscores >= chosen['threshold']).sum())}/{FIXTURE_ROWS}")


if __name__ == "__main__":
    main()
