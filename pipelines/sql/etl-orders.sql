-- Tables of pipelines/etl-orders.yaml. spate checks them against the
-- pipeline's column mappings when it starts (and with
-- `spate validate --connect`); it creates only its own bookkeeping tables
-- (spate_offsets, spate_state).
--
--   psql "postgres://postgres@127.0.0.1:5432/postgres" -f pipelines/sql/etl-orders.sql

-- The latest version of every order.
CREATE TABLE IF NOT EXISTS orders (
    order_id     text        PRIMARY KEY,
    customer_id  text        NOT NULL,
    amount_cents bigint      NOT NULL,
    currency     char(3)     NOT NULL,
    item_count   integer     NOT NULL,
    ordered_at   timestamptz NOT NULL,
    version      integer     NOT NULL,
    loaded_at    timestamptz NOT NULL DEFAULT now()
);

-- Orders that could not be loaded, with the reason and where they came from.
CREATE TABLE IF NOT EXISTS orders_rejected (
    id         bigserial   PRIMARY KEY,
    topic      text        NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint    NOT NULL,
    reason     text        NOT NULL,
    error      text,
    payload    bytea       NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
