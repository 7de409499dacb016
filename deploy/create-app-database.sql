-- The service's own database, beside Temporal's on the same PostgreSQL server (first start only).
-- The worker applies its schema migrations itself at start.
CREATE DATABASE delegation OWNER temporal;
