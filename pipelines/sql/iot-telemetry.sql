-- Tables of pipelines/iot-telemetry.yaml. spate checks them against the
-- pipeline's column mappings when it starts; it creates only its own
-- bookkeeping tables (spate_offsets, spate_state).
--
--   psql "postgres://postgres@127.0.0.1:5432/postgres" -f pipelines/sql/iot-telemetry.sql

-- One row per device and minute, upserted as readings arrive.
CREATE TABLE IF NOT EXISTS telemetry_minutes (
    device_id        text             NOT NULL,
    window_start     timestamptz      NOT NULL,
    window_end       timestamptz      NOT NULL,
    readings         bigint           NOT NULL,
    temperature_avg  double precision,
    temperature_min  double precision,
    temperature_max  double precision,
    temperature_last double precision,
    updated_at       timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, window_start)
);

-- Readings that could not be aggregated, with the reason.
CREATE TABLE IF NOT EXISTS telemetry_dead_letters (
    id        bigserial   PRIMARY KEY,
    topic     text,
    reason    text        NOT NULL,
    error     text,
    payload   bytea       NOT NULL,
    dead_at   timestamptz NOT NULL DEFAULT now()
);
