MODEL (
  name silver.int_returns,
  description 'Returns per symbol per hour, defined over time: change_Xh = close_t / close_(t - X hours) - 1 (as a fraction: 0.05 = +5%), NULL when the candle X hours earlier is missing, so a gap never stretches a window. log_return_1h = ln(close_t / close_(t - 1 h)). One sorted pass: the last candle at or before t - X is looked up with a time frame and used only if it opened exactly X hours earlier.',
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
  SELECT
    symbol,
    open_time,
    close,
    LAST_VALUE(open_time) OVER before1 AS t1,
    LAST_VALUE(close) OVER before1 AS c1,
    LAST_VALUE(open_time) OVER before24 AS t24,
    LAST_VALUE(close) OVER before24 AS c24,
    LAST_VALUE(open_time) OVER before168 AS t168,
    LAST_VALUE(close) OVER before168 AS c168
  FROM history
  WINDOW
    before1 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL '1 hour' PRECEDING),
    before24 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL '24 hours' PRECEDING),
    before168 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL '168 hours' PRECEDING)
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
  (close / close_1h_ago - 1)::DOUBLE PRECISION AS change_1h, /* close / close 1 h earlier - 1 */
  (close / close_24h_ago - 1)::DOUBLE PRECISION AS change_24h, /* close / close 24 h earlier - 1 */
  (close / close_7d_ago - 1)::DOUBLE PRECISION AS change_7d, /* close / close 168 h earlier - 1 */
  LN((close / close_1h_ago)::DOUBLE PRECISION) AS log_return_1h /* natural log of close / close 1 h earlier */
FROM exact
WHERE
  open_time BETWEEN @start_ts AND @end_ts
