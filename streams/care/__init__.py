"""Pure care rules (risk, assignment, follow-up, referrals): no Kafka, no clock, no env."""
