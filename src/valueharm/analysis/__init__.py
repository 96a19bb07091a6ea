"""Analysis: value–harm correlations decided by the family test, regressions per category, hypotheses, the
value-alignment checks (held-out survey, PVQ-40), mitigation deltas."""
