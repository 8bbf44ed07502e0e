"""Outbound lifecycle webhooks: signed the Standard Webhooks way, delivered from a persisted outbox."""
