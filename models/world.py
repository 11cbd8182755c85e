"""The realistic synthetic card-transaction world of the default model (fraud_gbm).

train_default.py trains on it and draws its fixture from it; the Rust event
generator (crates/streamscore-tools/src/events.rs) ports the same
distributions so that the demo, the bench and the tests send the default
model the kind of events it was trained on. The tables MCCS, HOURS,
ATTACK_HOURS and DAYS are written the way Rust prints its copies, and a unit
test in events.rs checks that both sides list the same rows (and ATTACK_RATE,
TAIL_SHARE, TAIL_ALPHA, AVG_MEDIAN); the other parameters are ported by hand:
change both sides together. FOREIGN_COUNTRIES is Python's only: schema v1
carries no country, so the Rust side draws whether the merchant is foreign,
not where it is.

The cardholders are those of one US issuer (home country US). Each transaction
is either ordinary or, with probability ATTACK_RATE, part of an attack on the
card (a stolen or tested card, a taken-over account). An attack shifts the
distributions, each signal only sometimes, so no single feature gives it away:

  field                      ordinary                              attack (latent)
  merchant_category          real 4-digit MCCs, MCCS weights       weights x (1 + 12 risk): quasi-cash,
                                                                   money transfer, gambling, electronics
  merchant_risk              beta, mean 0.03 + 0.6 x MCC risk      mean + 0.1
  amount                     per-MCC lognormal (lo..hi = 5th..95th  25 % card testing (0.50..5.00), else
                             pct) x cardholder level; 2 % Pareto    x lognormal(0.7, 0.5): the upper range
                             tail (alpha 1.6); cents; 0.5..50 000
  amount_avg_30d             55 x cardholder level x lognormal(0, 0.4), >= 1
  amount_to_avg_ratio        amount / amount_avg_30d
  hour_of_day                HOURS: daytime and evening peaks       ATTACK_HOURS: flat, more at night
  day_of_week                DAYS (0 = Monday)
  is_online                  per-MCC online share                  share + 0.5 (where there is any)
  card_present               not online (2 % keyed in)
  merchant_country (latent)  US; foreign 3 % in store, 10 % online  foreign 35 %, FOREIGN_COUNTRIES
                             (FOREIGN_COUNTRIES weights)            attack weights
  is_foreign                 merchant_country != US
  currency_mismatch          70 % of foreign, 0.4 % of domestic
  distance_from_home_km      lognormal(ln 8, 1.1); foreign          + 50 % far: lognormal(ln 600, 1)
                             lognormal(ln 3000, 0.6)
  distance_from_last_txn_km  lognormal(ln 5, 1.2)                  50 % lognormal(ln 900, 0.9)
  seconds_since_last_txn     lognormal(ln 15000, 1.3), >= 5         lognormal(ln 240, 1.1)
  txn_count_1h               1 + poisson(0.35)                     1 + poisson(3)
  txn_count_24h              txn_count_1h + poisson(3.2)           txn_count_1h + poisson(4)
  amount_sum_24h             amount + amount_avg_30d x gamma(txn_count_24h - 1, 1)
  distinct_merchants_24h     1 + binomial(txn_count_24h - 1, 0.65)  binomial p 0.85
  (the 1 h and 24 h windows end with this transaction and count it)
  failed_attempts_24h        poisson(0.06)                         poisson(1.6)
  account_age_days           lognormal(ln 1500, 0.8), 1..12000     30 % new: 1..90
  card_age_days              min(account age, 1..1460)             40 % new: 1..45
  device_risk                beta(1.3, 14)                         65 % beta(5, 2.5)
  ip_risk                    beta(1.2, 16)                         55 % beta(4, 2.5)
  chargebacks_1y             poisson(0.03)                         poisson(0.25)

The fraud label is drawn from a logistic model over the features (label_logit:
risky MCCs and merchants, night, card-not-present, foreign with a currency
mismatch, a high amount ratio, device and IP risk, failed attempts, velocity,
impossible travel, young accounts and cards, chargebacks), plus the latent
merchant country's risk and a bump for an attack. About 0.9 % of transactions
are fraud: over half of the attacks, and about 0.2 % of the ordinary-looking
transactions (which no model finds).

Vectorised numpy; deterministic for a given Generator state.
"""
import numpy as np

from features import FEATURES

HOME = "US"
ATTACK_RATE = 0.012

# (MCC, what it is, weight, lo, hi, online share, risk). lo..hi: the 5th..95th percentile of
# an ordinary amount there (USD), before the cardholder's level and the tail; risk: 0..1.
MCCS = [
    (5411, "grocery stores, supermarkets", 16, 5, 300, 0.08, 0.05),
    (5812, "restaurants", 10, 12, 150, 0.05, 0.05),
    (5814, "fast food", 10, 4, 30, 0.1, 0.04),
    (5541, "fuel", 8, 20, 120, 0, 0.08),
    (5311, "department stores", 5, 15, 400, 0.35, 0.08),
    (5310, "discount stores", 4, 5, 150, 0.25, 0.05),
    (5999, "miscellaneous retail", 6, 5, 250, 0.45, 0.15),
    (5732, "electronics", 4, 30, 2500, 0.55, 0.25),
    (5691, "clothing", 4, 20, 350, 0.5, 0.12),
    (5912, "pharmacies", 5, 5, 150, 0.1, 0.04),
    (5945, "toys, games", 2, 10, 200, 0.55, 0.15),
    (5815, "digital goods: media", 3, 1, 40, 1, 0.2),
    (4899, "cable, streaming", 2, 10, 120, 1, 0.05),
    (4900, "utilities", 2, 30, 300, 0.9, 0.03),
    (4111, "commuter transit", 5, 2, 60, 0.3, 0.03),
    (4121, "taxis, rideshare", 5, 8, 80, 0.9, 0.06),
    (7011, "hotels", 3, 90, 1200, 0.6, 0.12),
    (4511, "airlines", 2, 80, 2000, 0.85, 0.25),
    (6011, "ATM cash", 3, 20, 500, 0, 0.2),
    (5967, "direct marketing: inbound telemarketing", 1.5, 10, 300, 0.95, 0.55),
    (4829, "money transfer", 1, 50, 2500, 0.8, 0.7),
    (6051, "quasi-cash, crypto", 0.8, 50, 5000, 0.95, 0.75),
    (7995, "gambling", 0.7, 20, 1000, 0.85, 0.6),
    (5933, "pawn shops", 0.3, 30, 800, 0.05, 0.45),
]

# (ISO 3166 alpha-2, weight of an ordinary foreign transaction, weight in an attack, risk:
# a logit bump the model cannot see, since schema v1 carries no country).
FOREIGN_COUNTRIES = [
    ("CA", 14, 4, 0),
    ("MX", 12, 6, 0.2),
    ("GB", 12, 6, 0),
    ("DE", 7, 3, 0),
    ("FR", 7, 3, 0),
    ("ES", 5, 2, 0),
    ("IT", 5, 2, 0),
    ("NL", 4, 3, 0),
    ("IE", 4, 3, 0),
    ("JP", 5, 2, 0),
    ("CN", 6, 8, 0.3),
    ("IN", 4, 6, 0.3),
    ("BR", 4, 9, 0.5),
    ("AU", 3, 1, 0),
    ("SG", 3, 3, 0),
    ("HK", 2, 4, 0.2),
    ("AE", 2, 3, 0.2),
    ("TR", 2, 4, 0.4),
    ("PH", 1, 5, 0.5),
    ("NG", 2, 12, 0.9),
    ("RU", 1, 8, 0.8),
    ("RO", 1, 6, 0.6),
]

# Relative transaction volume by hour of the day (0..23), ordinary and in an attack.
HOURS = [1.2, 0.8, 0.5, 0.4, 0.4, 0.7, 1.5, 2.8, 4, 4.6, 5, 5.6,
         6.6, 6.3, 5.6, 5.3, 5.6, 6.4, 6.8, 6.4, 5.4, 4.3, 3.2, 2.1]
ATTACK_HOURS = [4.5, 4.8, 5, 5, 4.6, 3.8, 3, 3, 3.2, 3.5, 3.8, 4,
                4.2, 4.2, 4, 4, 4.1, 4.3, 4.5, 4.6, 4.6, 4.6, 4.5, 4.5]
# Relative volume by day of the week, 0 = Monday.
DAYS = [13, 13, 14, 14, 16, 16, 14]

TAIL_SHARE, TAIL_ALPHA = 0.02, 1.6  # share of amounts times a Pareto(1, alpha) factor
AVG_MEDIAN = 55  # median 30-day mean amount (USD) at cardholder level 1
LABEL_INTERCEPT = -6.9  # sets the base rate (about 1 %)


def _pick(rng, weights, n):
    w = np.asarray(weights, dtype=np.float64)
    return rng.choice(len(w), size=n, p=w / w.sum())


def _lognormal_at(rng, median, sigma, n):
    return rng.lognormal(np.log(median), sigma, n)


def _beta_mean(rng, mean, k, n):
    mean = np.clip(mean, 0.01, 0.95)
    return rng.beta(mean * k, (1 - mean) * k, n)


def _mixed(rng, attack, share, attack_values, ordinary_values):
    """attack_values where the row is an attack and a share-coin says so, else ordinary."""
    return np.where(attack & (rng.random(len(attack)) < share), attack_values, ordinary_values)


def draw_merchant(rng, n, attack):
    """MCC, merchant risk, amounts, hour, day, online and card present."""
    mcc_risk_table = np.array([m[6] for m in MCCS])
    ordinary = _pick(rng, [m[2] for m in MCCS], n)
    attacked = _pick(rng, [m[2] * (1 + 12 * m[6]) for m in MCCS], n)
    k = np.where(attack, attacked, ordinary)
    lo, hi = np.array([m[3] for m in MCCS], float)[k], np.array([m[4] for m in MCCS], float)[k]
    online_share = np.array([m[5] for m in MCCS], float)[k]
    mcc_risk = mcc_risk_table[k]

    level = rng.lognormal(0.0, 0.35, n)  # the cardholder's spending level
    body = rng.lognormal(np.log(np.sqrt(lo * hi)), np.log(hi / lo) / (2 * 1.645)) * level
    tail = np.where(rng.random(n) < TAIL_SHARE, 1 + rng.pareto(TAIL_ALPHA, n), 1.0)
    amount = body * tail
    testing = rng.random(n) < 0.25
    attack_amount = np.where(testing, rng.uniform(0.5, 5.0, n), amount * rng.lognormal(0.7, 0.5, n))
    amount = np.round(np.clip(np.where(attack, attack_amount, amount), 0.5, 50_000), 2)
    avg = np.round(np.maximum(AVG_MEDIAN * level * rng.lognormal(0.0, 0.4, n), 1.0), 2)

    hour = np.where(attack, _pick(rng, ATTACK_HOURS, n), _pick(rng, HOURS, n))
    share = np.where(attack & (online_share > 0), np.minimum(online_share + 0.5, 1.0), online_share)
    online = rng.random(n) < share
    card_present = ~online & (rng.random(n) >= 0.02)
    return {
        "amount": amount,
        "amount_avg_30d": avg,
        "amount_to_avg_ratio": amount / avg,
        "merchant_category": np.array([m[0] for m in MCCS])[k],
        "merchant_risk": np.round(_beta_mean(rng, 0.03 + 0.6 * mcc_risk + 0.1 * attack, 14, n), 4),
        "hour_of_day": hour,
        "day_of_week": _pick(rng, DAYS, n),
        "is_online": online,
        "card_present": card_present,
    }, mcc_risk


def draw_place(rng, n, attack, online):
    """The merchant's country (latent), is_foreign, currency mismatch and the distances."""
    p_foreign = np.where(attack, 0.35, np.where(online, 0.10, 0.03))
    foreign = rng.random(n) < p_foreign
    country = np.where(attack, _pick(rng, [c[2] for c in FOREIGN_COUNTRIES], n),
                       _pick(rng, [c[1] for c in FOREIGN_COUNTRIES], n))
    codes = np.array([c[0] for c in FOREIGN_COUNTRIES] + [HOME])
    country = np.where(foreign, country, len(FOREIGN_COUNTRIES))
    country_risk = np.array([c[3] for c in FOREIGN_COUNTRIES] + [0.0])[country]
    mismatch = rng.random(n) < np.where(foreign, 0.70, 0.004)
    home = np.where(foreign, _lognormal_at(rng, 3000, 0.6, n), _lognormal_at(rng, 8, 1.1, n))
    home = _mixed(rng, attack & ~foreign, 0.5, _lognormal_at(rng, 600, 1.0, n), home)
    last = _mixed(rng, attack, 0.5, _lognormal_at(rng, 900, 0.9, n), _lognormal_at(rng, 5, 1.2, n))
    return {
        "distance_from_home_km": np.round(home, 2),
        "distance_from_last_txn_km": np.round(last, 2),
        "is_foreign": foreign,
        "currency_mismatch": mismatch,
    }, codes[country], country_risk


def draw_history(rng, n, attack, amount, avg):
    """The card's recent use, its age and the risk signals an upstream system attaches."""
    seconds = np.where(attack, _lognormal_at(rng, 240, 1.1, n), _lognormal_at(rng, 15_000, 1.3, n))
    # The windows end with this transaction and count it: 1h >= 1, 24h >= 1h.
    count_1h = 1 + rng.poisson(np.where(attack, 3.0, 0.35))
    count_24h = count_1h + rng.poisson(np.where(attack, 4.0, 3.2))
    earlier = count_24h - 1
    prior = np.where(earlier > 0, rng.gamma(np.maximum(earlier, 1), 1.0), 0.0)
    account = np.clip(_lognormal_at(rng, 1500, 0.8, n), 1, 12_000).astype(np.int64)
    account = _mixed(rng, attack, 0.30, rng.integers(1, 91, n), account)
    card = np.minimum(account, rng.integers(1, 1461, n))
    card = _mixed(rng, attack, 0.40, np.minimum(account, rng.integers(1, 46, n)), card)
    return {
        "seconds_since_last_txn": np.maximum(seconds, 5).astype(np.int64),
        "txn_count_1h": count_1h,
        "txn_count_24h": count_24h,
        "amount_sum_24h": np.round(amount + avg * prior, 2),
        "distinct_merchants_24h": 1 + rng.binomial(earlier, np.where(attack, 0.85, 0.65)),
        "failed_attempts_24h": rng.poisson(np.where(attack, 1.6, 0.06)),
        "account_age_days": account,
        "card_age_days": card,
        "device_risk": np.round(_mixed(rng, attack, 0.65, rng.beta(5, 2.5, n), rng.beta(1.3, 14, n)), 4),
        "ip_risk": np.round(_mixed(rng, attack, 0.55, rng.beta(4, 2.5, n), rng.beta(1.2, 16, n)), 4),
        "chargebacks_1y": rng.poisson(np.where(attack, 0.25, 0.03)),
    }


def label_logit(cols, mcc_risk, country_risk, attack):
    """The log-odds of fraud: the observable features, the latent country's risk and the attack."""
    night = (cols["hour_of_day"] <= 5).astype(float)
    cnp = cols["is_online"] & ~cols["card_present"]
    foreign, mismatch = cols["is_foreign"], cols["currency_mismatch"]
    quick = cols["seconds_since_last_txn"] < 600
    return (
        LABEL_INTERCEPT
        + 1.6 * mcc_risk
        + 2.0 * cols["merchant_risk"]
        + 0.8 * night
        + 0.5 * cnp
        + 0.4 * foreign + 1.0 * (foreign & mismatch)
        + 0.6 * np.log1p(cols["amount_to_avg_ratio"])
        + 2.8 * cols["device_risk"]
        + 2.4 * cols["ip_risk"]
        + 0.55 * np.minimum(cols["failed_attempts_24h"], 6)
        + 0.30 * np.minimum(cols["txn_count_1h"] - 1, 10)
        + 0.5 * quick * np.log1p(cols["distance_from_last_txn_km"] / 50)
        - 0.25 * np.log1p(cols["account_age_days"] / 30)
        - 0.20 * np.log1p(cols["card_age_days"] / 30)
        + 0.5 * np.minimum(cols["chargebacks_1y"], 3)
        + country_risk
        + 1.2 * attack
    )


def draw(rng: np.random.Generator, n: int, attack_rate: float = ATTACK_RATE):
    """Draws n transactions.

    Returns (columns by feature name, fraud labels int64, latent) where latent holds
    "merchant_country" (ISO alpha-2 strings) and "attack" (bool): not model inputs.
    attack_rate 1.0 draws attacks only (the fixture's high-risk rows).
    """
    attack = rng.random(n) < attack_rate
    cols, mcc_risk = draw_merchant(rng, n, attack)
    place, country, country_risk = draw_place(rng, n, attack, cols["is_online"])
    cols.update(place)
    cols.update(draw_history(rng, n, attack, cols["amount"], cols["amount_avg_30d"]))
    p = 1 / (1 + np.exp(-label_logit(cols, mcc_risk, country_risk, attack)))
    label = (rng.random(n) < p).astype(np.int64)
    missing = [name for name, _, _ in FEATURES if name not in cols]
    assert not missing, f"world.draw does not draw {missing}"
    return cols, label, {"merchant_country": country, "attack": attack}


def describe(cols, label, latent) -> str:
    """A few lines on what was drawn (for the training log)."""
    amount = cols["amount"]
    q = np.percentile(amount, [50, 90, 99, 99.9])
    foreign = cols["is_foreign"]
    night = cols["hour_of_day"] <= 5
    return "\n".join([
        f"rows {len(label)}, fraud rate {label.mean():.4f}, attacks {latent['attack'].mean():.4f} "
        f"(fraud among attacks {label[latent['attack']].mean():.3f}, among ordinary {label[~latent['attack']].mean():.4f})",
        f"amount p50 {q[0]:.2f} p90 {q[1]:.2f} p99 {q[2]:.2f} p99.9 {q[3]:.2f} max {amount.max():.2f}",
        f"foreign {foreign.mean():.4f} (currency mismatch among foreign {cols['currency_mismatch'][foreign].mean():.3f}), "
        f"online {cols['is_online'].mean():.3f}, night {night.mean():.3f} (fraud rate at night {label[night].mean():.4f})",
    ])
