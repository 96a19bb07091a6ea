"""Analysis: value–harm correlations, the value-alignment check, mitigation deltas."""
