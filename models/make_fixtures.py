"""Writes models/fixtures/fraud_mlp.expected.json: input events and the scores
that Python's onnxruntime gives them, so the Rust tests can check that the
processor scores the same rows the same way.

    python3 models/make_fixtures.py     # needs numpy onnxruntime
"""
import json
import pathlib

import numpy as np
import onnxruntime as ort

from features import FEATURES, draw, matrix

HERE = pathlib.Path(__file__).resolve().parent
ROWS = 64


def main() -> None:
    card = json.loads((HERE / "fraud_mlp.card.json").read_text())
    cols, _ = draw(np.random.default_rng(7), ROWS)
    # Make a few rows extreme so the fixture covers high scores too.
    for i in range(0, ROWS, 8):
        cols["device_risk"][i] = 0.95
        cols["ip_risk"][i] = 0.9
        cols["failed_attempts_24h"][i] = 4
    x = matrix(cols)
    sess = ort.InferenceSession(str(HERE / card["file"]), providers=["CPUExecutionProvider"])
    proba = sess.run([card["output"]["name"]], {card["input"]["name"]: x})[0][:, 1]
    events = []
    for i in range(ROWS):
        event = {"event_id": f"fixture-{i:03d}", "card_id": f"card-{i % 9}", "event_time": 1_790_000_000_000 + i}
        for name, field, kind in FEATURES:
            v = cols[name][i]
            event[field] = bool(v) if kind == "boolean" else (float(v) if kind == "double" else int(v))
        events.append({"event": event, "score": float(proba[i])})
    out = HERE / "fixtures" / "fraud_mlp.expected.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"model_sha256": card["sha256"], "onnxruntime": ort.__version__,
                               "rows": events}, indent=1) + "\n")
    print(f"{out.name}: {ROWS} rows, score range {proba.min():.4f}..{proba.max():.4f}")


if __name__ == "__main__":
    main()
