MODEL (
  name silver.int_returns,
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

/* Returns per symbol per hour, defined over time: change_Xh = close_t / close_(t - X hours) - 1 (as a fraction: 0.05 = +5%), NULL when the candle X hours earlier is missing, so a gap never stretches a window. log_return_1h = ln(close_t / close_(t - 1 h)). */
WITH history AS (
  SELECT
    symbol,
    open_time,
    close
  FROM silver.stg_binance__ohlcv
  WHERE
    open_time BETWEEN @start_ts::TIMESTAMPTZ - INTERVAL '168 hours' AND @end_ts
)
SELECT
  c.symbol::TEXT AS symbol, /* Binance pair */
  c.open_time::TIMESTAMPTZ AS open_time, /* candle open, UTC */
  c.close::NUMERIC(36, 8) AS close, /* candle close, USDT */
  (c.close / p1.close - 1)::DOUBLE PRECISION AS change_1h, /* close / close 1 h earlier - 1 */
  (c.close / p24.close - 1)::DOUBLE PRECISION AS change_24h, /* close / close 24 h earlier - 1 */
  (c.close / p168.close - 1)::DOUBLE PRECISION AS change_7d, /* close / close 168 h earlier - 1 */
  LN((c.close / p1.close)::DOUBLE PRECISION) AS log_return_1h /* natural log of close / close 1 h earlier */
FROM history AS c
LEFT JOIN history AS p1
  ON p1.symbol = c.symbol AND p1.open_time = c.open_time - INTERVAL '1 hour'
LEFT JOIN history AS p24
  ON p24.symbol = c.symbol AND p24.open_time = c.open_time - INTERVAL '24 hours'
LEFT JOIN history AS p168
  ON p168.symbol = c.symbol AND p168.open_time = c.open_time - INTERVAL '168 hours'
WHERE
  c.open_time BETWEEN @start_ts AND @end_ts
