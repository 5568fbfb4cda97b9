"""Community-agency referrals: the directory, need detection, matching and the pure engine."""
