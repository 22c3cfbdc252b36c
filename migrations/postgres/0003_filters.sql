-- Filters clients upload for /sync. Keep in step with the other backend's 0003_filters.sql.
CREATE TABLE filters (
    user_id   TEXT NOT NULL,
    filter_id TEXT NOT NULL,
    json      TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
