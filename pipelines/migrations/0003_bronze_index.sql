-- Rows per load id of each bronze file as the reconciliation check last read them (pipelines/quality.py,
-- bronze.rows_per_load), with the file's size and modification time then: the hourly check reads only files
-- written or rewritten since, instead of every file of every partition (a request each on S3). A cache:
-- its rows can be deleted at any time, at the cost of one full read.
CREATE TABLE ops.bronze_index (
    table_name text   NOT NULL,
    path       text   NOT NULL,  -- the file in the lake, as the lake's filesystem names it
    size       bigint NOT NULL,
    mtime_ns   bigint NOT NULL,
    load_id    text   NOT NULL,
    rows       bigint NOT NULL,
    PRIMARY KEY (table_name, path, load_id)
);
