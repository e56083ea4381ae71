-- Run once by the postgres image on an empty volume (docker-compose.yml): the Prefect
-- server's own database next to pesflow's (POSTGRES_DB=pesflow).
CREATE DATABASE prefect;
