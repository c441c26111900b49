-- SPDX-License-Identifier: Apache-2.0
-- The docker-compose demo's database: the same schema and role as scripts/demo.
CREATE DATABASE app;
\connect app
CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE, name text, bio text);
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id int, total numeric(10,2),
                     created_at timestamptz DEFAULT now());
-- FULL: updates carry the old row, so a changed email's old cache key is known.
ALTER TABLE users REPLICA IDENTITY FULL;
CREATE ROLE cdc LOGIN REPLICATION PASSWORD 'cdc';
GRANT SELECT ON users, orders TO cdc;
CREATE PUBLICATION pgcdc_app FOR TABLE users, orders;
