-- Autovacuum and analyze settings of the hot ops tables (why: pipelines/catalog.py AUTOVACUUM, which
-- tests/test_maintenance.py holds this file's result to). Storage parameters only: no table is rewritten.
ALTER TABLE ops.request_weight SET (
    fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000
);
ALTER TABLE ops.raw_changes SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200);
ALTER TABLE ops.pending_gap_checks SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200);
