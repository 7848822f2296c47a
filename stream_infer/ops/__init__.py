"""What operators look at: consumer-group lag (and, as they land, metrics and health)."""
