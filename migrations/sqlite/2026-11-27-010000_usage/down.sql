ALTER TABLE api_keys DROP COLUMN last_used_time;
DROP TABLE usage_minutes;
