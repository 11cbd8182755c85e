"""The synthetic card-transaction world shared by train.py and make_fixtures.py.

One place defines the feature order, the Avro field each feature comes from,
and how the synthetic data is drawn, so the model, its card and the test
fixtures can never disagree.
"""
import numpy as np

# (feature name, Avro field, kind) in the model's input order.
FEATURES = [
    ("amount", "amount", "double"),
    ("amount_avg_30d", "amount_avg_30d", "double"),
    ("amount_to_avg_ratio", "amount_to_avg_ratio", "double"),
    ("merchant_category", "merchant_category", "int"),
    ("merchant_risk", "merchant_risk", "double"),
    ("hour_of_day", "hour_of_day", "int"),
    ("day_of_week", "day_of_week", "int"),
    ("is_online", "is_online", "boolean"),
    ("card_present", "card_present", "boolean"),
    ("distance_from_home_km", "distance_from_home_km", "double"),
    ("distance_from_last_txn_km", "distance_from_last_txn_km", "double"),
    ("seconds_since_last_txn", "seconds_since_last_txn", "long"),
    ("txn_count_1h", "txn_count_1h", "int"),
    ("txn_count_24h", "txn_count_24h", "int"),
    ("amount_sum_24h", "amount_sum_24h", "double"),
    ("distinct_merchants_24h", "distinct_merchants_24h", "int"),
    ("failed_attempts_24h", "failed_attempts_24h", "int"),
    ("account_age_days", "account_age_days", "int"),
    ("card_age_days", "card_age_days", "int"),
    ("is_foreign", "is_foreign", "boolean"),
    ("currency_mismatch", "currency_mismatch", "boolean"),
    ("device_risk", "device_risk", "double"),
    ("ip_risk", "ip_risk", "double"),
    ("chargebacks_1y", "chargebacks_1y", "int"),
]


def draw(rng: np.random.Generator, n: int):
    """Draws n transactions; returns (columns by feature name, fraud labels)."""
    avg = rng.lognormal(3.5, 0.8, n)
    fraud_prone = rng.random(n)
    amount = avg * rng.lognormal(0.0, 0.6, n)
    cols = {
        "amount": amount,
        "amount_avg_30d": avg,
        "amount_to_avg_ratio": amount / avg,
        "merchant_category": rng.integers(0, 20, n),
        "merchant_risk": rng.beta(2, 8, n),
        "hour_of_day": rng.integers(0, 24, n),
        "day_of_week": rng.integers(0, 7, n),
        "is_online": rng.random(n) < 0.45,
        "card_present": rng.random(n) < 0.5,
        "distance_from_home_km": rng.exponential(15.0, n),
        "distance_from_last_txn_km": rng.exponential(10.0, n),
        "seconds_since_last_txn": rng.exponential(20000.0, n).astype(np.int64),
        "txn_count_1h": rng.poisson(0.6, n),
        "txn_count_24h": rng.poisson(4.0, n),
        "amount_sum_24h": avg * rng.gamma(2.0, 1.5, n),
        "distinct_merchants_24h": rng.poisson(2.5, n),
        "failed_attempts_24h": rng.poisson(0.15, n),
        "account_age_days": rng.integers(1, 5000, n),
        "card_age_days": rng.integers(1, 2000, n),
        "is_foreign": rng.random(n) < 0.08,
        "currency_mismatch": rng.random(n) < 0.06,
        "device_risk": rng.beta(1.5, 10, n),
        "ip_risk": rng.beta(1.5, 10, n),
        "chargebacks_1y": rng.poisson(0.05, n),
    }
    night = (cols["hour_of_day"] <= 5).astype(float)
    logit = (
        -6.2
        + 1.1 * np.log1p(cols["amount_to_avg_ratio"]) * (1 + cols["is_online"])
        + 3.0 * cols["merchant_risk"]
        + 0.9 * night
        + 0.6 * cols["is_online"] * (1 - cols["card_present"])
        + 0.025 * np.minimum(cols["distance_from_home_km"], 200)
        + 0.5 * np.log1p(cols["distance_from_last_txn_km"]) * (cols["seconds_since_last_txn"] < 600)
        + 0.45 * cols["txn_count_1h"]
        + 0.7 * cols["failed_attempts_24h"]
        - 0.35 * np.log1p(cols["account_age_days"] / 30)
        - 0.2 * np.log1p(cols["card_age_days"] / 30)
        + 1.2 * cols["is_foreign"] * cols["currency_mismatch"]
        + 4.0 * cols["device_risk"]
        + 3.5 * cols["ip_risk"]
        + 0.8 * cols["chargebacks_1y"]
        + 1.5 * (fraud_prone < 0.01)
    )
    p = 1 / (1 + np.exp(-logit))
    label = (rng.random(n) < p).astype(np.int64)
    return cols, label


def matrix(cols) -> np.ndarray:
    """Feature columns in model order as a float32 matrix, as the processor builds it."""
    return np.column_stack([np.asarray(cols[name], dtype=np.float64) for name, _, _ in FEATURES]).astype(np.float32)
