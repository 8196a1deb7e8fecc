MODEL (
  name gold.fct_market_sentiment,
  description 'Daily market sentiment: Fear & Greed, the market totals and BTC dominance of the day''s newest CoinGecko snapshot, and advancers vs decliners among the tracked pairs. One row per UTC day.',
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column day,
    lookback 2
  ),
  cron '@daily',
  owner analytics,
  grain day,
  audits (
    not_null(columns := (day)),
    unique_combination_of_columns(columns := (day)),
    accepted_range(column := btc_dominance, min_v := 0, max_v := 1)
  )
);

WITH days AS (
  SELECT
    date_day AS day
  FROM gold.dim_date
  WHERE
    date_day BETWEEN @start_ds AND @end_ds
), fng AS (
  SELECT
    day,
    fng_value,
    fng_label
  FROM silver.stg_alternative_me__fear_greed
  WHERE
    day BETWEEN @start_ds AND @end_ds
), snapshot_of_day AS (
  /* the day's newest snapshot: the newest of its pairs' newest snapshots */
  SELECT
    day,
    MAX(snapshot_ts) AS snapshot_ts
  FROM silver.int_pair_snapshots_daily
  WHERE
    day BETWEEN @start_ds AND @end_ds
  GROUP BY
    day
), last_snapshot AS (
  /* every coin of the day's last snapshot (a coin that left the top list during the day is not counted) */
  SELECT
    m.coin_id,
    d.day,
    m.market_cap_usd,
    m.volume_24h_usd
  FROM silver.stg_coingecko__markets AS m
  JOIN snapshot_of_day AS d
    ON m.snapshot_ts = d.snapshot_ts
), market AS (
  SELECT
    day,
    SUM(market_cap_usd) AS total_market_cap_usd,
    SUM(volume_24h_usd) AS total_volume_24h_usd,
    SUM(market_cap_usd) FILTER (WHERE coin_id = 'bitcoin') / NULLIF(SUM(market_cap_usd), 0) AS btc_dominance,
    COUNT(*) AS coins
  FROM last_snapshot
  GROUP BY
    day
), breadth AS (
  SELECT
    day,
    COUNT(*) FILTER (WHERE change_1d > 0) AS advancers,
    COUNT(*) FILTER (WHERE change_1d < 0) AS decliners
  FROM gold.fct_daily_summary
  WHERE
    day BETWEEN @start_ds AND @end_ds
  GROUP BY
    day
)
SELECT
  days.day::DATE AS day, /* UTC day */
  fng.fng_value::INT AS fng_value, /* Fear & Greed value, 0-100 */
  fng.fng_label::TEXT AS fng_label, /* the API's label */
  market.total_market_cap_usd::DOUBLE PRECISION AS total_market_cap_usd, /* sum of market caps of the snapshot's coins */
  market.total_volume_24h_usd::DOUBLE PRECISION AS total_volume_24h_usd, /* sum of their 24 h volumes */
  market.btc_dominance::DOUBLE PRECISION AS btc_dominance, /* bitcoin market cap / total (fraction) */
  market.coins::INT AS coins_in_snapshot, /* coins in the day's snapshot */
  breadth.advancers::INT AS advancers, /* tracked pairs that closed the day higher (change_1d > 0) */
  breadth.decliners::INT AS decliners /* tracked pairs that closed the day lower (change_1d < 0) */
FROM days
LEFT JOIN fng
  USING (day)
LEFT JOIN market
  USING (day)
LEFT JOIN breadth
  USING (day)
WHERE
  NOT fng.fng_value IS NULL OR NOT market.coins IS NULL OR NOT breadth.day IS NULL
