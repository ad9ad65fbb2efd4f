"""Webhooks (§14): `views` (the admins' API), `messages` (what a message says, how it is signed,
storing it in the change's transaction), `guard` (which addresses a webhook may reach, and
connecting to the one checked) and `sender` (the runner's deliveries, retries, deactivation)."""
