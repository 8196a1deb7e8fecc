-- Migration 1: the schema of v0.1.0 (fd6a1b8), when it was unversioned `IF NOT EXISTS` DDL run by every
-- command. Idempotent, so a database built by v0.1.0 (or earlier) is recognised and brought forward in place.
-- Never edit an applied migration (its checksum is recorded): add the next one.
-- Schemas and the tables the pipeline owns (dlt owns the raw landing tables it creates).
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS ops;
CREATE SCHEMA IF NOT EXISTS gold;

CREATE TABLE IF NOT EXISTS raw.dead_letter (
    id             bigserial PRIMARY KEY,
    source         text        NOT NULL,  -- binance | coingecko | fear_greed
    table_name     text        NOT NULL,  -- the raw table the record was meant for
    natural_key    text,                  -- e.g. BTCUSDT@2024-01-01T00:00:00Z
    payload        jsonb       NOT NULL,  -- the record exactly as the API sent it
    reason         text        NOT NULL,
    load_id        text        NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now(),
    replayed_at    timestamptz,
    replay_load_id text
);
CREATE INDEX IF NOT EXISTS dead_letter_load_id ON raw.dead_letter (load_id);

CREATE TABLE IF NOT EXISTS ops.pipeline_runs (
    run_id        text PRIMARY KEY,
    source        text        NOT NULL,
    command       text        NOT NULL,
    window_start  timestamptz,
    window_end    timestamptz,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    duration_s    double precision,
    status        text        NOT NULL,  -- running | success | failed | up_for_retry (an Airflow try)
    rows_extracted bigint     NOT NULL DEFAULT 0,
    rows_bronze   bigint      NOT NULL DEFAULT 0,
    rows_raw      bigint      NOT NULL DEFAULT 0,
    dead_letters  integer     NOT NULL DEFAULT 0,
    requests      integer     NOT NULL DEFAULT 0,
    retries       integer     NOT NULL DEFAULT 0,
    rate_limited  integer     NOT NULL DEFAULT 0,
    error         text,
    details       jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS pipeline_runs_source_started ON ops.pipeline_runs (source, started_at DESC);

CREATE TABLE IF NOT EXISTS ops.gaps (
    symbol          text        NOT NULL,
    interval        text        NOT NULL,
    open_time       timestamptz NOT NULL,  -- the missing candle's open time
    status          text        NOT NULL,  -- missing | refilled | known_gap
    detected_run_id text        NOT NULL,
    detected_at     timestamptz NOT NULL DEFAULT now(),
    refetched_at    timestamptz,
    PRIMARY KEY (symbol, interval, open_time)
);
-- Why the hour is missing: exchange_outage (no tracked pair has it), pair_halt (only this pair misses it),
-- ingest_failure (the exchange had it and the re-fetch found it: status refilled).
-- (checked first: ALTER TABLE would take an exclusive lock on every run, even with IF NOT EXISTS)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = 'ops' AND table_name = 'gaps' AND column_name = 'gap_class') THEN
        ALTER TABLE ops.gaps ADD COLUMN gap_class text;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS gaps_open_time ON ops.gaps (open_time);
-- The windows a binance run still has to search for missing hours: written before its raw load, removed
-- once its gaps are settled. A run killed in between leaves them for the next run to search.
CREATE TABLE IF NOT EXISTS ops.pending_gap_checks (
    run_id     text        NOT NULL,
    symbol     text        NOT NULL,
    start_time timestamptz NOT NULL,
    end_time   timestamptz NOT NULL,
    PRIMARY KEY (run_id, symbol, start_time)
);

-- Pair lifecycle (pipelines/ingest/lifecycle.py): what exchangeInfo says about each pair the pipeline knows.
CREATE TABLE IF NOT EXISTS ops.pairs (
    symbol             text PRIMARY KEY,
    status             text        NOT NULL,  -- TRADING | BREAK | ... | NOT_LISTED (-1121: removed)
    status_since       timestamptz NOT NULL,  -- first run (exchange clock) that saw this status
    first_seen_trading timestamptz,
    last_seen_trading  timestamptz,
    first_candle       timestamptz,           -- the exchange's first candle: the listing
    successor          text,                  -- universe.successors
    updated_at         timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS ops.pair_status_history (  -- SCD2: one row per pair per status spell
    symbol     text        NOT NULL,
    status     text        NOT NULL,
    valid_from timestamptz NOT NULL,
    valid_to   timestamptz,                          -- NULL: still the status
    run_id     text        NOT NULL,
    PRIMARY KEY (symbol, valid_from)
);

-- Revised candles (pipelines/ingest/revisions.py): old and new values of every candle the exchange changed.
CREATE TABLE IF NOT EXISTS ops.revisions (
    symbol      text        NOT NULL,
    interval    text        NOT NULL,
    open_time   timestamptz NOT NULL,
    changes     jsonb       NOT NULL,  -- {"volume": {"old": "...", "new": "..."}, ...}
    old_load_id text        NOT NULL,  -- the load that wrote the old values
    new_load_id text        NOT NULL,  -- the load that wrote the new ones
    found_by    text        NOT NULL,  -- restate (the trailing re-fetch) | backfill | verify
    run_id      text        NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    applied_at  timestamptz,           -- NULL until raw holds the new values
    PRIMARY KEY (symbol, interval, open_time, new_load_id)
);

CREATE TABLE IF NOT EXISTS ops.dq_results (
    run_id         text        NOT NULL,  -- one `cryptoflow check` invocation
    layer          text        NOT NULL,  -- raw | silver | gold
    check_name     text        NOT NULL,
    table_name     text        NOT NULL,
    level          text        NOT NULL,  -- the level this check can raise: fail | warn
    outcome        text        NOT NULL,  -- pass | warn | fail | error
    measured_value double precision,
    diagnostics    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    checked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, layer, check_name)
);
CREATE INDEX IF NOT EXISTS dq_results_check_time ON ops.dq_results (check_name, checked_at DESC);

-- Alerting (pipelines/ops/slack.py): one incident per check, opened on failure and resolved when it passes.
CREATE TABLE IF NOT EXISTS ops.alert_incidents (
    check_name   text PRIMARY KEY,
    opened_at    timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,  -- the latest run in which the check failed
    resolved_at  timestamptz,
    status       text        NOT NULL CHECK (status IN ('open', 'resolved')),
    last_value   double precision
);

-- Every delivery attempt series (Slack webhook or digest email), delivered or not.
CREATE TABLE IF NOT EXISTS ops.alerts_sent (
    id         bigserial PRIMARY KEY,
    check_name text,                  -- the incident's check; NULL for the digest
    kind       text        NOT NULL CHECK (kind IN ('opened', 'resolved', 'digest')),
    channel    text        NOT NULL CHECK (channel IN ('slack', 'email')),
    sent_at    timestamptz NOT NULL DEFAULT now(),
    ok         boolean     NOT NULL,
    attempts   integer     NOT NULL,
    error      text
);
CREATE INDEX IF NOT EXISTS alerts_sent_time ON ops.alerts_sent (sent_at DESC);

-- Schema drift of the JSON sources (pipelines/ingest/schema_drift.py).
CREATE TABLE IF NOT EXISTS ops.source_fields (
    source       text        NOT NULL,
    table_name   text        NOT NULL,
    field        text        NOT NULL,
    json_type    text        NOT NULL,  -- number | string | boolean | object | array | null (or a/b when mixed)
    present      boolean     NOT NULL,  -- false once a run no longer saw it
    first_run_id text        NOT NULL,
    last_run_id  text        NOT NULL,
    last_seen_at timestamptz NOT NULL,
    PRIMARY KEY (source, table_name, field)
);
CREATE TABLE IF NOT EXISTS ops.schema_changes (
    id          bigserial PRIMARY KEY,
    source      text        NOT NULL,
    table_name  text        NOT NULL,
    field       text        NOT NULL,
    change      text        NOT NULL CHECK (change IN ('added', 'dropped', 'restored', 'type_changed')),
    old_type    text,
    new_type    text,
    run_id      text        NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now()
);

-- The kline archive's files a backfill loaded (pipelines/ingest/archive.py): a re-run skips a file whose
-- checksum is unchanged and re-loads one the archive re-published (its changed candles are restated).
CREATE TABLE IF NOT EXISTS ops.archive_files (
    url          text PRIMARY KEY,
    symbol       text NOT NULL,
    size_bytes   bigint NOT NULL,
    sha256       text NOT NULL,
    rows         integer NOT NULL,
    first_open   timestamptz,
    last_open    timestamptz,
    load_id      text NOT NULL,
    loaded_at    timestamptz NOT NULL DEFAULT now()
);

-- The SQLMesh project (its files and the model defaults) last planned into each environment: an hourly
-- transform whose project matches runs the due intervals without re-parsing and re-planning it.
CREATE TABLE IF NOT EXISTS ops.transform_state (
    environment    text PRIMARY KEY,
    project_sha256 text NOT NULL,
    planned_at     timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE ops.transform_state ADD COLUMN IF NOT EXISTS plan_id text NOT NULL DEFAULT '';  -- SQLMesh's

-- Request weight reserved per API and calendar minute by every process loading into this database
-- (pipelines/runtime/weight_budget.py): the exchange's limit is per IP, not per process.
CREATE TABLE IF NOT EXISTS ops.request_weight (
    api    text NOT NULL,
    minute timestamptz NOT NULL,
    used   integer NOT NULL,
    PRIMARY KEY (api, minute)
);
-- The weight limit the exchange last reported (exchangeInfo), when below the configured one it is the budget's
CREATE TABLE IF NOT EXISTS ops.exchange_limits (
    api          text PRIMARY KEY,
    weight_limit integer NOT NULL,
    reported_at  timestamptz NOT NULL
);

-- Hours each raw load brings, for tables a silver model reads by time range (catalog.Table.incremental_model),
-- recorded before the load: the transform restates silver and gold over those a run's lookback does not
-- reach (a backfill of older history, a gap re-fetch, a verified revision), then deletes the row. A row of
-- a load still running waits; one of a load that failed costs at most a restatement of unchanged hours.
CREATE TABLE IF NOT EXISTS ops.raw_changes (
    id          bigserial PRIMARY KEY,
    table_name  text        NOT NULL,
    load_id     text        NOT NULL,  -- starts with the id of its run (ops.pipeline_runs.run_id)
    first_time  timestamptz NOT NULL,  -- the table's time column: the earliest and latest row of the load
    last_time   timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
