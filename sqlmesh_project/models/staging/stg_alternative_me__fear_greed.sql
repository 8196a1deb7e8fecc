MODEL (
  name silver.stg_alternative_me__fear_greed,
  description 'The Crypto Fear & Greed index (alternative.me) with the API''s own label, rebuilt in full (it is small). One row per UTC day.',
  kind FULL,
  cron '@hourly',
  owner data_eng,
  grain day,
  audits (
    not_null(columns := (day, fng_value, fng_label)),
    unique_combination_of_columns(columns := (day)),
    assert_positive_rows
  )
);

SELECT
  (ts AT TIME ZONE 'UTC')::DATE AS day, /* the UTC day the value is for */
  value::INT AS fng_value, /* index value, 0 (extreme fear) to 100 (extreme greed) */
  value_classification::TEXT AS fng_label /* the API's label, as sent */
FROM raw.fear_greed
