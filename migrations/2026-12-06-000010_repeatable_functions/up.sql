-- The server functions are source, not history (issue 17): each lives in its
-- own file under src/db/functions/ and is applied after the versioned
-- migrations whenever its text changes, the way Flyway's repeatable
-- migrations work (src/db/functions.rs). This table remembers the checksum
-- of the text each function was last created from.
CREATE TABLE server_functions (
    -- the file's name without `.sql`, which is the function's name
    name TEXT PRIMARY KEY,
    -- hex SHA-256 of the file's text as applied
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
