"""The sessionize benchmark's reference (bench/sessionize_bench.py): the job's rules, full rebuild, as one DuckDB SQL
script over the same raw folders; run in a process of its own so that its memory is measured alone."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from model_lib.config import get_settings

DUCKDB_SQL = """
CREATE TEMP TABLE lines AS
SELECT line, CAST(dt AS VARCHAR) AS dt, filename, row_number() OVER () AS line_order
FROM read_csv('{raw}/dt=*/*.jsonl.gz', columns = {{'line': 'VARCHAR'}}, delim = '\x1f', quote = '', escape = '',
              header = false, auto_detect = false, filename = true, hive_partitioning = true,
              -- a line that is not UTF-8 (the job's bad_encoding) is rejected here; counted from reject_errors
              ignore_errors = true, store_rejects = true)
WHERE dt <= DATE '{ds}';

CREATE TEMP TABLE validated AS
WITH fields AS (
    SELECT *, starts_with(ltrim(line), '{{') AND json_valid(line) AS is_json,
           CASE WHEN json_valid(line) THEN json_extract_string(line, ['$.user_id', '$.item_id', '$.event_type',
                '$.ts', '$.event_id', '$.session_id']) END AS f
    FROM lines
), typed AS (
    SELECT line, dt, filename, line_order, is_json,
           nullif(trim(f[1]), '') AS user_id, nullif(trim(f[2]), '') AS item_id, nullif(trim(f[3]), '') AS event_type,
           nullif(trim(f[4]), '') AS ts, nullif(trim(f[5]), '') AS event_id, nullif(trim(f[6]), '') AS session_id
    FROM fields
), timed AS (
    SELECT *, CASE WHEN regexp_full_match(ts, '-?[0-9]{{1,19}}')
                   THEN CASE WHEN TRY_CAST(ts AS BIGINT) BETWEEN -62135596800000 AND 253402300799999
                             THEN epoch_ms(TRY_CAST(ts AS BIGINT))::TIMESTAMP END
                   ELSE TRY_CAST(TRY_CAST(ts AS TIMESTAMPTZ) AS TIMESTAMP) END AS event_ts
    FROM typed
)
SELECT *, CASE
    WHEN length(line) > {max_line} OR length(user_id) > {max_id} OR length(item_id) > {max_id}
         OR length(event_id) > {max_id} OR length(session_id) > {max_id} THEN 'too_long'
    WHEN NOT is_json THEN 'not_json'
    WHEN user_id IS NULL OR item_id IS NULL OR event_type IS NULL OR ts IS NULL THEN 'missing_field'
    WHEN regexp_matches(concat(user_id, item_id, event_id, session_id), '[\\x00-\\x1F\\x7F]') THEN 'bad_id'
    WHEN event_ts IS NULL THEN 'bad_ts'
    WHEN event_type NOT IN ({event_types}) THEN 'unknown_event_type'
    WHEN event_ts >= CAST(dt AS TIMESTAMP) + INTERVAL 1 DAY + INTERVAL {future} MINUTE THEN 'future_ts'
    WHEN event_ts < CAST(dt AS TIMESTAMP) - INTERVAL {lateness} HOUR THEN 'too_late'
END AS reason
FROM timed;

CREATE TEMP TABLE events AS
SELECT * EXCLUDE (occurrence) FROM (
    SELECT *, row_number() OVER (
        PARTITION BY coalesce('id:' || event_id,
                              concat_ws(chr(1), 't', user_id, item_id, event_type, event_ts::VARCHAR))
        ORDER BY dt, filename, line_order) AS occurrence
    FROM validated WHERE reason IS NULL
) WHERE occurrence = 1;

CREATE TEMP TABLE vocabulary AS
SELECT item_id, (row_number() OVER (ORDER BY n DESC, item_id) + 1)::INTEGER AS item_index
FROM (SELECT item_id, count(*) AS n FROM events GROUP BY item_id) WHERE n >= {min_count}
ORDER BY n DESC, item_id LIMIT {max_size};

CREATE TEMP TABLE sequences AS
WITH ranked AS (
    SELECT e.user_id, coalesce(v.item_index, 1) AS item_index,
           list_position([{event_types}], e.event_type) AS type_index,
           e.event_ts, e.session_id,
           row_number() OVER w AS recency,
           epoch(e.event_ts) - epoch(lead(e.event_ts) OVER w) AS gap,
           lead(e.event_ts) OVER w IS NULL OR epoch(e.event_ts) - epoch(lead(e.event_ts) OVER w) > {gap_seconds}
               OR (e.session_id IS DISTINCT FROM lead(e.session_id) OVER w) AS starts,
           count(*) OVER (PARTITION BY e.user_id) AS n
    FROM events e LEFT JOIN vocabulary v USING (item_id)
    WINDOW w AS (PARTITION BY e.user_id ORDER BY e.event_ts DESC, e.dt DESC, e.filename DESC, e.line_order DESC)
), sessions AS (
    SELECT *, 1 + sum(CASE WHEN recency <= {seq_len} AND recency < least(n, {seq_len}) AND starts THEN 1 ELSE 0 END)
                  OVER (PARTITION BY user_id ORDER BY recency ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)
               AS session_index,
           CASE WHEN gap IS NULL THEN 1 ELSE least(2 + floor(log2(greatest(gap, 0) + 1))::INTEGER, {max_bucket}) END
               AS gap_bucket
    FROM ranked
)
SELECT user_id,
       list(item_index ORDER BY recency DESC) FILTER (WHERE recency <= {seq_len}) AS item_indices,
       list(type_index ORDER BY recency DESC) FILTER (WHERE recency <= {seq_len}) AS event_type_indices,
       list(gap_bucket ORDER BY recency DESC) FILTER (WHERE recency <= {seq_len}) AS gap_buckets,
       list(session_index ORDER BY recency DESC) FILTER (WHERE recency <= {seq_len}) AS session_indices,
       count(*) FILTER (WHERE recency <= {seq_len}) AS length,
       list(DISTINCT item_index ORDER BY item_index) FILTER (WHERE recency > {seq_len}) AS older_item_indices,
       max(event_ts) AS last_event_ts
FROM sessions GROUP BY user_id;

COPY (SELECT * FROM sequences ORDER BY user_id) TO '{output}' (FORMAT parquet);
"""


def duckdb_sessionize(data_dir: Path, ds: dt.date, output: Path) -> dict:
    """The reference: the sessionize job's rules (full rebuild) in one DuckDB SQL script."""
    import duckdb

    settings = get_settings(data_dir=data_dir)
    started = time.time()
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'; SET threads = 2; SET preserve_insertion_order = true")
    connection.execute(
        DUCKDB_SQL.format(
            raw=settings.lake.raw_events_dir,
            ds=ds.isoformat(),
            output=output,
            max_line=settings.sessionize.max_line_chars,
            max_id=settings.sessionize.max_id_chars,
            event_types=", ".join(f"'{t}'" for t in settings.sessionize.event_types),
            future=settings.sessionize.future_tolerance_minutes,
            lateness=settings.sessionize.allowed_lateness_hours,
            min_count=settings.sessionize.min_item_count,
            max_size=settings.sessionize.max_vocab_size,
            gap_seconds=settings.sessionize.session_gap_minutes * 60,
            seq_len=settings.sessionize.seq_len,
            max_bucket=settings.sessionize.max_gap_bucket,
        )
    )
    counts = connection.execute("SELECT count(*), count(*) FILTER (WHERE reason IS NOT NULL) FROM validated").fetchone()
    not_utf8 = connection.execute("SELECT count(DISTINCT (scan_id, file_id, line)) FROM reject_errors").fetchone()[0]
    valid = connection.execute("SELECT count(*) FROM events").fetchone()[0]
    return {
        "read": counts[0] + not_utf8,
        "quarantined": counts[1] + not_utf8,
        "valid": valid,
        "duplicates": counts[0] - counts[1] - valid,
        "users": connection.execute("SELECT count(*) FROM sequences").fetchone()[0],
        "seconds": round(time.time() - started, 1),
    }
