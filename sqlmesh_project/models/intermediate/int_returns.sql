MODEL (
  name silver.int_returns,
  description 'Hourly returns over exact time offsets (1 h, 24 h, 168 h), NULL when the candle that many hours earlier is missing so a gap never stretches a window. One row per symbol per hour.',
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column open_time,
    lookback 48
  ),
  cron '@hourly',
  owner data_eng,
  grain (symbol, open_time),
  audits (
    not_null(columns := (symbol, open_time, close)),
    unique_combination_of_columns(columns := (symbol, open_time)),
    accepted_range(column := change_1h, min_v := -1, max_v := 100)
  )
);

WITH history AS (
  SELECT
    symbol,
    open_time,
    close
  FROM silver.stg_binance__ohlcv
  WHERE
    open_time BETWEEN @start_ts::TIMESTAMPTZ - INTERVAL '168 hours' AND @end_ts
), earlier AS (
  /* one sorted pass: the last candle at or before t - X, used below only if it opened exactly X hours earlier */
  SELECT
    symbol,
    open_time,
    close,
    @over_pair(LAST_VALUE(open_time), 1) AS t1,
    @over_pair(LAST_VALUE(close), 1) AS c1,
    @over_pair(LAST_VALUE(open_time), 24) AS t24,
    @over_pair(LAST_VALUE(close), 24) AS c24,
    @over_pair(LAST_VALUE(open_time), 168) AS t168,
    @over_pair(LAST_VALUE(close), 168) AS c168
  FROM history
), exact AS (
  SELECT
    symbol,
    open_time,
    close,
    CASE WHEN t1 = open_time - INTERVAL '1 hour' THEN c1 END AS close_1h_ago,
    CASE WHEN t24 = open_time - INTERVAL '24 hours' THEN c24 END AS close_24h_ago,
    CASE WHEN t168 = open_time - INTERVAL '168 hours' THEN c168 END AS close_7d_ago
  FROM earlier
)
SELECT
  symbol::TEXT AS symbol, /* Binance pair */
  open_time::TIMESTAMPTZ AS open_time, /* candle open, UTC */
  close::NUMERIC(36, 8) AS close, /* candle close, USDT */
  (close / close_1h_ago - 1)::DOUBLE PRECISION AS change_1h, /* close / close 1 h earlier - 1, a fraction (0.05 = +5%); NULL when that candle is missing */
  (close / close_24h_ago - 1)::DOUBLE PRECISION AS change_24h, /* close / close 24 h earlier - 1 (fraction); NULL when that candle is missing */
  (close / close_7d_ago - 1)::DOUBLE PRECISION AS change_7d, /* close / close 168 h earlier - 1 (fraction); NULL when that candle is missing */
  LN((close / close_1h_ago)::DOUBLE PRECISION) AS log_return_1h /* ln(close / close 1 h earlier); NULL when that candle is missing */
FROM exact
WHERE
  open_time BETWEEN @start_ts AND @end_ts
