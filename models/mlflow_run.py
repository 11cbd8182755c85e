"""Logs the zoo's logreg_tensor model as one real MLflow run, written by MLflow
itself, so that `streamscore model card --mlflow-run DIR` is tested on what
MLflow really writes (its MLmodel file, meta.yaml files, metrics and params).

    .local/train-venv/bin/pip install -r models/requirements-train.txt -r models/requirements-mlflow.txt
    .local/train-venv/bin/python models/mlflow_run.py

What it does:
  * re-fits StandardScaler + LogisticRegression exactly as models/zoo.py does for
    logreg_tensor (same data draw, same split, same converter options) and checks
    that the ONNX export is byte-identical to the committed models/zoo/logreg_tensor.onnx;
  * deletes models/zoo/mlflow and logs one run into a fresh MLflow FILE store rooted
    there (tracking URI "file:" + the absolute path; MLflow 3.18 only allows the file
    store with MLFLOW_ALLOW_FILE_STORE=true, which this script sets), experiment "streamscore-zoo",
    run name "logreg_tensor":
      params   C, penalty, solver, max_iter, scaler, seed, rows, train_rows, holdout_rows, opset
      metrics  holdout_auc at step 0 (the same model fit on the first 10% of the training
               rows, a learning-curve point) and at step 1 (the full model's ONNX graph
               scored by onnxruntime: the final value, as in the card), fraud_rate
      model    models/zoo/logreg_tensor.onnx (onnx.load) via mlflow.onnx.log_model, name
               "model", with a signature (float32 [-1, 24] -> float32 [-1, 2]); MLflow 3
               writes it as a logged model under <experiment id>/models/<model id>/artifacts/
               (MLmodel, model.onnx, conda.yaml, python_env.yaml, requirements.txt).
    log_model (at its default step 0) links the run's step-0 metrics to the model: MLflow
    appends them again to the run's metrics files, so metrics/holdout_auc ends with the
    step-0 line. The run's value is MLflow's "latest": the max by (step, timestamp, value).

Not deterministic byte for byte: the experiment, run and model ids are random, the
meta.yaml files and the metrics hold wall-clock timestamps, artifact locations are
absolute file: URIs of the machine it ran on, and a git commit tag records HEAD.
The directory is committed once as a fixture; nothing runs this during set-up.
"""
import hashlib
import os
import pathlib
import shutil
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# MLflow 3.18 keeps the file store in "maintenance mode" and refuses it unless this opt-out
# is set; the file store is what writes a run directory (meta.yaml, metrics/, params/, tags/).
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# zoo sets OMP_NUM_THREADS=1 on import and only trains when run as a script.
from zoo import OPSET, ROWS, SEED, ZOO, data  # noqa: E402

import mlflow  # noqa: E402
import mlflow.onnx  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

STORE = ZOO / "mlflow"
EXPERIMENT = "streamscore-zoo"
RUN_NAME = "logreg_tensor"
ONNX_PATH = ZOO / "logreg_tensor.onnx"
C, SOLVER, PENALTY, MAX_ITER = 1.0, "lbfgs", "l2", 1000


def fit(x, y):
    # As zoo.logistic_regressions: LogisticRegression(max_iter=1000), defaults C=1, lbfgs, L2.
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER))
    return model.fit(x, y)


def main() -> None:
    x_train, y_train, x_test, y_test, meta = data()
    model = fit(x_train, y_train)
    onx = to_onnx(model, x_train[:1], target_opset=OPSET, options={"zipmap": False})
    onx.graph.name = "logreg_tensor"
    opsets = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in opsets:
        onx.opset_import.add(domain=domain, version=version)
    committed = ONNX_PATH.read_bytes()
    assert onx.SerializeToString() == committed, "re-fit model differs from models/zoo/logreg_tensor.onnx"

    sess = ort.InferenceSession(str(ONNX_PATH), providers=["CPUExecutionProvider"])
    probabilities = sess.run(["probabilities"], {"X": x_test})[0]
    auc_final = float(roc_auc_score(y_test, probabilities[:, 1]))
    small = len(x_train) // 10
    auc_small = float(roc_auc_score(y_test, fit(x_train[:small], y_train[:small]).predict_proba(x_test)[:, 1]))
    assert auc_small != auc_final

    if STORE.exists():
        shutil.rmtree(STORE)
    STORE.mkdir(parents=True)
    mlflow.set_tracking_uri("file:" + str(STORE))
    mlflow.set_experiment(EXPERIMENT)
    signature = infer_signature(x_test[:5], probabilities[:5])
    with mlflow.start_run(run_name=RUN_NAME) as run:
        mlflow.log_params({
            "C": C, "penalty": PENALTY, "solver": SOLVER, "max_iter": MAX_ITER, "scaler": "StandardScaler",
            "seed": SEED, "rows": ROWS, "train_rows": len(y_train), "holdout_rows": len(y_test),
            "opset": OPSET[""],
        })
        mlflow.set_tags({"streamscore.card": "models/zoo/logreg_tensor.card.json",
                         "streamscore.onnx_sha256": hashlib.sha256(committed).hexdigest()})
        mlflow.log_metric("holdout_auc", auc_small, step=0)
        mlflow.log_metric("holdout_auc", auc_final, step=1)
        mlflow.log_metric("fraud_rate", meta["fraud_rate"])
        info = mlflow.onnx.log_model(onnx.load(str(ONNX_PATH)), name="model", signature=signature)
    print(f"mlflow {mlflow.__version__}: experiment {run.info.experiment_id}, run {run.info.run_id}, "
          f"model {info.model_id} ({info.model_uri}); holdout_auc {auc_small:.4f} -> {auc_final:.4f}, "
          f"fraud_rate {meta['fraud_rate']:.4f}")


if __name__ == "__main__":
    main()
