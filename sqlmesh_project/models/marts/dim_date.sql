MODEL (
  name gold.dim_date,
  description 'Calendar spine from 2017-01-01 to 2030-12-31. One row per UTC day.',
  kind FULL,
  cron '@daily',
  owner analytics,
  grain date_day,
  audits (
    not_null(columns := (date_day)),
    unique_combination_of_columns(columns := (date_day))
  )
);

SELECT
  d::DATE AS date_day, /* the UTC day */
  EXTRACT(YEAR FROM d)::INT AS year, /* calendar year */
  EXTRACT(QUARTER FROM d)::INT AS quarter, /* 1-4 */
  EXTRACT(MONTH FROM d)::INT AS month, /* 1-12 */
  TO_CHAR(d, 'Mon')::TEXT AS month_name, /* Jan-Dec */
  EXTRACT(ISOYEAR FROM d)::INT AS iso_year, /* ISO-8601 week-numbering year */
  EXTRACT(WEEK FROM d)::INT AS iso_week, /* ISO-8601 week 1-53 */
  EXTRACT(ISODOW FROM d)::INT AS iso_day_of_week, /* 1 = Monday .. 7 = Sunday */
  TO_CHAR(d, 'Dy')::TEXT AS day_name, /* Mon-Sun */
  (EXTRACT(ISODOW FROM d) >= 6)::BOOLEAN AS is_weekend, /* Saturday or Sunday */
  DATE_TRUNC('month', d)::DATE AS month_start /* first day of the month */
FROM GENERATE_SERIES('2017-01-01'::DATE, '2030-12-31'::DATE, INTERVAL '1 day') AS d
