"""Calibrated constants of the synthetic seed generator.

All numbers below were derived once from the course data
(``/work/shared/data/streamflow-course/seeds/month_000``, 7,043 users) with pandas;
the generator never reads that data. Quantile tables hold the 0, 5, …, 100th
percentiles and are sampled as piecewise-linear inverse CDFs.
"""

from __future__ import annotations

# ---- users ----------------------------------------------------------------------
P_MALE = 0.5048
P_FAMILY = 0.4830
P_DEPENDENTS_GIVEN_FAMILY = {True: 0.5141, False: 0.0991}
# P(senior | net_service), from P(net_service | senior) and P(senior) = 0.1621.
P_SENIOR_GIVEN_NET = {"DSL": 0.107, "Fiber optic": 0.268, "No": 0.034}

# ---- subscriptions --------------------------------------------------------------
CONTRACT_TYPES: tuple[str, ...] = ("Month-to-month", "One year", "Two year")
CONTRACT_SHARES: tuple[float, ...] = (0.5502, 0.2091, 0.2407)

NET_SERVICES: tuple[str, ...] = ("DSL", "Fiber optic", "No")
# P(net_service | contract_type), rows in CONTRACT_TYPES order.
NET_GIVEN_CONTRACT: dict[str, tuple[float, float, float]] = {
    "Month-to-month": (0.3156, 0.5492, 0.1352),
    "One year": (0.3870, 0.3659, 0.2471),
    "Two year": (0.3705, 0.2531, 0.3764),
}

# months_active at month 0, per contract type (the course data caps tenure at 72).
MONTHS_ACTIVE_QUANTILES: dict[str, tuple[float, ...]] = {
    "Month-to-month": (1, 1, 1, 1, 2, 3, 4, 6, 8, 10, 12, 14, 17, 21, 24, 29, 33, 39, 46, 56, 72),
    "One year": (0, 10, 14, 19, 23, 27, 30, 34, 37, 41, 44, 47, 50, 53, 55, 58, 61, 64, 67, 69, 72),
    "Two year": (0, 14, 26, 37, 44, 48, 52.2, 56, 60, 62, 64, 66, 68, 69, 70, 71, 72, 72, 72, 72, 72),
}

# Streaming plans exist only with internet (NULL when net_service == "No").
P_TV_GIVEN_NET = {"DSL": 0.3953, "Fiber optic": 0.5652}
# P(movies | net_service, tv)
P_MOVIES_GIVEN_NET_TV = {
    ("DSL", False): 0.2398,
    ("DSL", True): 0.6583,
    ("Fiber optic", False): 0.3276,
    ("Fiber optic", True): 0.7486,
}
P_PAPERLESS_GIVEN_NET = {"DSL": 0.5494, "Fiber optic": 0.7736, "No": 0.2923}

# monthly_fee = base + tv * TV + movies * MOVIES + residual (least squares on the course data);
# fee for "No" internet is sampled directly. Fees are multiples of 0.05.
FEE_LINEAR = {"DSL": (47.95, 12.80, 12.58), "Fiber optic": (76.81, 12.95, 13.03)}
FEE_RESIDUAL_QUANTILES: dict[str, tuple[float, ...]] = {
    "DSL": (
        -29.37, -22.9, -19.37, -16.87, -12.95, -8.55, -4.45, -2.9, -1.07, 1.25, 2.25,
        3.55, 5.63, 6.7, 7.7, 9.13, 11.13, 12.58, 14.73, 17.63, 24.15,
    ),
    "Fiber optic": (
        -15.24, -9.7, -7.94, -6.96, -6.11, -4.84, -3.79, -2.9, -2.24, -1.51, -0.66,
        0.36, 1.46, 2.41, 3.31, 4.34, 5.56, 7.11, 8.64, 11.87, 20.19,
    ),
}  # fmt: skip
FEE_NO_NET_QUANTILES: tuple[float, ...] = (
    18.25, 19.2, 19.4, 19.5, 19.6, 19.7, 19.8, 19.9, 19.95, 20.05, 20.15,
    20.25, 20.35, 20.45, 20.65, 20.9, 24.1, 24.66, 25.08, 25.5, 26.9,
)  # fmt: skip
FEE_MIN, FEE_MAX = 18.25, 118.75
# Spearman correlation of months_active with the fee residual, per net_service (course: 0.39 / 0.57 / 0.24).
FEE_TENURE_LINK = {"DSL": 0.4, "Fiber optic": 0.55, "No": 0.25}
# total_paid / (months_active * monthly_fee) scatters around 1 with sd ≈ 0.17 / sqrt(months_active);
# 0.0 (not blank) for months_active == 0 in the course data.
TOTAL_PAID_RATIO_SD = 0.17

# ---- usage / payments / support ---------------------------------------------------
# Continuous columns: value = clip(user_base + monthly_noise); (mean, total sd, monthly noise sd).
WATCH_HOURS = (29.63, 6.75, 1.2)  # course: N(29.6, 6.75), corr(month 0, month 1) = 0.99
# The course data holds one imputed constant (29.141…) for every user; we draw a realistic
# spread around it (a constant column breaks normed Wasserstein drift tests).
SESSION_MINS = (29.14, 8.0, 3.0)
RESOLUTION_HRS = (10.0, 3.9, 0.8)  # course: N(10, 3.9) clipped to [1, 25], one decimal
RESOLUTION_MIN, RESOLUTION_MAX = 1.0, 25.0

# Count columns: month 0 draws from the marginal; each later month keeps the user's value
# with probability 1 - q and redraws from the same marginal with probability q, so the
# marginal is identical every month. (marginal, q)
DEVICES_MAX = 3  # uniform on 1..3
DEVICES_RESAMPLE = 0.10
SKIPS_POISSON, SKIPS_RESAMPLE = 5.05, 0.30
REBUFFER_POISSON, REBUFFER_RESAMPLE = 2.31, 0.35
FAILED_POISSON, FAILED_RESAMPLE = 0.161, 0.15
TICKETS_POISSON, TICKETS_RESAMPLE = 0.303, 0.15

# ---- churn ------------------------------------------------------------------------
CHURN_RATE = 0.265  # course month_000: 26.5 % (month_001: 24.15 %)
# Logistic churn model; the intercept is re-solved every month so that the undrifted
# population churns at CHURN_RATE. Directions follow domain sense (the course data's
# usage columns carry almost no signal).
CHURN_COEF = {
    "Month-to-month": 1.25,
    "Two year": -1.1,
    "log1p_months_active": -0.55,
    "Fiber optic": 0.55,
    "No": -0.45,
    "monthly_fee": 0.012,  # per currency unit above 65
    "paperless_billing": 0.3,
    "user_is_senior": 0.3,
    "has_dependents": -0.2,
    "failed_payments_90d": 0.9,
    "support_tickets_90d": 0.55,
    "rebuffer_events_7d": 0.22,  # per event above the mean
    "watch_hours_30d": -0.06,  # per hour above the mean
    "avg_session_mins_7d": -0.015,
    "ticket_avg_resolution_hrs_90d": 0.03,
}
