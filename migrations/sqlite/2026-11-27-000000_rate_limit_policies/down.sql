DROP TABLE rate_limit_policies;
