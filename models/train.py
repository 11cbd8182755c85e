"""Trains models/fraud_mlp.onnx and writes its model card.

    python3 models/train.py        # needs numpy scikit-learn skl2onnx onnx onnxruntime

Deterministic (fixed seed): the same versions give the same model. The .onnx
and the card are committed; nothing trains during set-up.
"""
import hashlib
import json
import pathlib

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from features import FEATURES, draw, matrix

HERE = pathlib.Path(__file__).resolve().parent
SEED = 20261124
ROWS = 160_000
NAME, VERSION = "fraud_mlp", "1.0.0"


def main() -> None:
    rng = np.random.default_rng(SEED)
    cols, y = draw(rng, ROWS)
    x = matrix(cols)
    data_sha = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    split = int(ROWS * 0.8)
    model = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(64, 32), alpha=1e-4, batch_size=512,
                      learning_rate_init=1e-3, max_iter=40, early_stopping=True,
                      random_state=SEED),
    )
    model.fit(x[:split], y[:split])

    onx = to_onnx(model, x[:1], target_opset=17, options={"zipmap": False})
    path = HERE / f"{NAME}.onnx"
    path.write_bytes(onx.SerializeToString())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    proba = sess.run(["probabilities"], {input_name: x[split:]})[0][:, 1]
    auc = float(roc_auc_score(y[split:], proba))

    card = {
        "name": NAME,
        "version": VERSION,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "input": {"name": input_name, "dtype": "float32", "shape": [-1, len(FEATURES)]},
        "output": {"name": "probabilities", "dtype": "float32", "positive_class_column": 1},
        "features": [{"name": n, "field": f, "type": t} for n, f, t in FEATURES],
        "threshold": 0.5,
        "training": {
            "script": "models/train.py",
            "seed": SEED,
            "rows": ROWS,
            "fraud_rate": float(y.mean()),
            "data_sha256": data_sha,
            "architecture": "StandardScaler -> MLP 24-64-32-2 (relu, adam)",
        },
        "evaluation": {"holdout_rows": ROWS - split, "holdout_auc": round(auc, 4)},
    }
    (HERE / f"{NAME}.card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"{path.name}: holdout AUC {auc:.4f}, fraud rate {y.mean():.4f}, sha256 {card['sha256'][:16]}…")


if __name__ == "__main__":
    main()
