-- metrics_totals: the partition's totals of runs ended by status and of queue waits,
-- as of now (the dashboard's chart reads them beside its snapshots, history.py).
-- KEYS: the partition's prefix.
-- Returns a flat field/value list: `ended|<status>`, n, `wait|<ms>`, n, ...
return metrics_totals()
