MODEL (
  name silver.stg_alternative_me__fear_greed,
  description 'Crypto Fear & Greed index (alternative.me): one row per UTC day, with the API''s own label. Small, so rebuilt in full.',
  kind FULL,
  cron '@hourly',
  owner data_eng,
  grain day,
  audits (
    not_null(columns := (day, fng_value, fng_label)),
    unique_combination_of_columns(columns := (day)),
    accepted_range(column := fng_value, min_v := 0, max_v := 100),
    accepted_values(column := fng_label, is_in := ('Extreme Fear', 'Fear', 'Neutral', 'Greed', 'Extreme Greed')),
    assert_positive_rows
  )
);

SELECT
  (ts AT TIME ZONE 'UTC')::DATE AS day, /* the UTC day the value is for */
  value::INT AS fng_value, /* index value, 0 (extreme fear) to 100 (extreme greed) */
  value_classification::TEXT AS fng_label /* the API's label, as sent */
FROM raw.fear_greed
